"""Pinning a bundle: accept only one manifest digest, or only bundles signed by a trusted key.

The manifest hashes every file of a bundle, so its sha256 (`Bundle.sha256`, printed by every
command that runs a bundle and recorded in run.json) names the whole bundle: `--bundle-sha256`
refuses any other. A re-hashed perturbed graph or a permuted gene list passes the integrity
check (the manifest is consistent with itself) but has another digest.

Signatures use the OpenSSF model-signing package (the optional `[signing]` extra), with an
elliptic-curve key pair: the publisher signs the bundle directory
(`model_signing sign key BUNDLE --private_key key.pem --signature BUNDLE.sig`), and a clinic
passes `--bundle-signature BUNDLE.sig --trusted-key publisher.pub.pem`; any change to any file,
or a signature by another key, is refused. No network is used (no transparency log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from unicure_rt.errors import UserError

HEX64 = re.compile(r"[0-9a-f]{64}")
MISSING_SIGNING = (
    "Verifying a bundle signature needs the optional model-signing package: install it with "
    "`pip install '.[signing]'` from your unicure-rt clone (or from an offline kit built with "
    "that extra)."
)


@dataclass(frozen=True)
class BundlePin:
    """What a caller accepts of a bundle: one manifest digest and/or a signature by one key."""

    sha256: str | None = None
    signature: Path | None = None
    trusted_key: Path | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None and not HEX64.fullmatch(self.sha256.strip().lower()):
            raise UserError(
                f"--bundle-sha256 must be the 64 hexadecimal digits of a manifest digest (got "
                f"'{self.sha256}'). `unicure-rt verify BUNDLE` and `unicure-rt info` print it."
            )
        if (self.signature is None) != (self.trusted_key is None):
            raise UserError(
                "--bundle-signature and --trusted-key go together: the signature file of the "
                "bundle and the public key (PEM) of the publisher you trust."
            )
        for path in (self.signature, self.trusted_key):
            if path is not None and not Path(path).is_file():
                raise UserError(f"'{path}' does not exist or is not a file.")

    @property
    def expected_sha256(self) -> str | None:
        return None if self.sha256 is None else self.sha256.strip().lower()

    def check(self, bundle: Path, digest: str) -> None:
        """Refuse `bundle` unless its manifest digest is the pinned one and its signature holds."""
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise UserError(
                f"Bundle '{bundle}' has manifest sha256 {digest}, not the pinned "
                f"{self.expected_sha256} (--bundle-sha256). It is another bundle, or this one "
                "was changed: use the bundle you pinned, or pin this one if you trust it."
            )
        if self.signature is not None:
            verify_signature(bundle, self.signature, self.trusted_key)


def verify_signature(bundle: Path, signature: Path, trusted_key: Path) -> None:
    """Refuse `bundle` unless `signature` signs exactly its files with `trusted_key`."""
    try:
        from model_signing import verifying
    except ImportError:
        raise UserError(MISSING_SIGNING) from None
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=str(trusted_key))
        config.verify(str(bundle), str(signature))
    except Exception as exc:  # noqa: BLE001 - model-signing raises ValueError and its own types
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(
            f"The signature '{signature}' does not verify bundle '{bundle}' with the trusted key "
            f"'{trusted_key}' ({reason}). The bundle was changed after signing, or signed by "
            "another key: use the bundle as published, or the publisher's public key."
        ) from None
