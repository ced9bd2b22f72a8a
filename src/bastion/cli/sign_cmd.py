"""`bastion keygen`, `bastion sign` and `bastion verify`: signed manifests of model folders (Ed25519 or
ECDSA keys, or certificates; Bastion's format or OpenSSF model-signing's).

Exit codes: 0 the model is intact (or the key/signature was written), 1 verification found a difference
(each added, missing or changed file and each signature problem on its own line), 2 the command could not
run (missing folder or key, malformed signature file, bad option).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import TaskID

from bastion.cli.common import EXIT_FAILED, EXIT_OK, err_console, handle_errors, print_json, progress_bar
from bastion.errors import InputError
from bastion.sign.hashing import shown

#: below this many bytes hashing takes well under a second: a progress bar would only flicker
PROGRESS_MIN_BYTES = 256 << 20
_MIB = 1 << 20


def register(app: typer.Typer) -> None:
    """Add ``bastion keygen``, ``bastion sign`` and ``bastion verify`` to the app."""
    app.command("keygen")(keygen_command)
    app.command("sign")(sign_command)
    app.command("verify")(verify_command)


def _password(env_name: str | None) -> str | None:
    # passwords come from the environment, never argv: argv is visible to every user in `ps`
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise InputError(
            "--password-env", repr(env_name), "the name of a set, non-empty environment variable"
        )
    return value


@contextmanager
def _hash_progress(enabled: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(advance, set_total) hooks for a MiB progress bar that only appears for large folders."""
    show = enabled and err_console.is_terminal
    with progress_bar(show) as bar:
        task: list[TaskID] = []

        def set_total(total_bytes: int) -> None:
            if show and total_bytes >= PROGRESS_MIN_BYTES:
                task.append(bar.add_task("hashing (MiB)", total=max(1, total_bytes // _MIB)))

        def advance(n_bytes: int) -> None:
            if task:
                bar.update(task[0], advance=n_bytes / _MIB)

        yield advance, set_total


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@handle_errors
def keygen_command(
    out: Path = typer.Option(..., "--out", "-o", help="Private key path; the public key goes to OUT.pub."),
    password_env: str | None = typer.Option(
        None,
        "--password-env",
        help="Encrypt the private key with the password held in this environment variable.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing key files.", metavar=""),
    key_type: str = typer.Option(
        "ed25519", "--type", help="ed25519, ecdsa-p256, ecdsa-p384 or ecdsa-p521 (model-signing needs ECDSA)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Create a key pair: OUT (PKCS#8 PEM, mode 0600, scrypt-encrypted with --password-env) and OUT.pub.

    Examples:

      bastion keygen --out keys/release

      bastion keygen --out keys/ec --type ecdsa-p256

      BASTION_KEY_PW=... bastion keygen --out keys/release --password-env BASTION_KEY_PW
    """
    from bastion.sign import key_id, keygen, load_public_key

    private_path, public_path = keygen(out, password=_password(password_env), force=force, key_type=key_type)
    kid = key_id(load_public_key(public_path))
    if json_out:
        print_json({"private_key": str(private_path), "public_key": str(public_path), "key_id": kid})
    else:
        typer.echo(
            f"private key: {private_path} (keep it secret)\npublic key:  {public_path}\nkey id:      {kid}"
        )
    raise typer.Exit(EXIT_OK)


@handle_errors
def sign_command(
    model_dir: Path = typer.Argument(..., help="Folder holding the model's files."),
    key: Path = typer.Option(
        ..., "--key", "-k", help="Private key (Ed25519 or ECDSA) from `bastion keygen`."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Signature file (default MODEL_DIR/model.sig). Never a key or a model file; an existing "
        "signature is replaced, any other existing file only with --force.",
    ),
    ignore: list[str] = typer.Option(
        [],
        "--ignore",
        help="Path to leave out, taken literally, with everything under it (repeatable); .git always.",
        metavar="PATH",
    ),
    ignore_glob: list[str] = typer.Option(
        [],
        "--ignore-glob",
        help="Glob of paths to leave out (repeatable), e.g. '*.log' (bastion format).",
        metavar="GLOB",
    ),
    sig_format: str = typer.Option(
        "bastion", "--format", help="bastion, or model-signing (OpenSSF model-signing v1.0, ECDSA keys)."
    ),
    certificate: Path | None = typer.Option(
        None, "--certificate", help="PEM certificate of the key: verifiers then trust a CA, not a key."
    ),
    certificate_chain: list[Path] = typer.Option(
        [],
        "--certificate-chain",
        help="PEM intermediate certificates to ship with --certificate (repeatable).",
        metavar="PEM",
    ),
    insecure_key_permissions: bool = typer.Option(
        False, "--insecure-key-permissions", help="Use a key file group or others can read.", metavar=""
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite an existing non-signature output.", metavar=""
    ),
    allow_symlinks: bool = typer.Option(
        False,
        "--allow-symlinks",
        help="Allow symlinks that stay inside the folder and out of ignored paths (recorded as links; "
        "model-signing format hashes their target).",
        metavar="",
    ),
    shard_size: int | None = typer.Option(
        None,
        "--shard-size",
        help="Files larger than this many bytes are hashed as parallel shards (default 1 GiB; with "
        "--format model-signing, selects its 'shards' layout instead of whole files).",
    ),
    workers: int | None = typer.Option(None, "--workers", help="Hashing threads (default: cores + 4)."),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Environment variable holding the private key's password."
    ),
    data_manifest: Path | None = typer.Option(
        None,
        "--data-manifest",
        help="Training data's manifest (from `bastion data manifest`): the statement records its SHA-256, "
        "tying this model to the exact data it saw (bastion format).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Hash every file of MODEL_DIR and sign the manifest (in-toto Statement, DSSE envelope, Sigstore bundle).

    Examples:

      bastion sign my-model/ --key keys/release

      bastion sign my-model/ --key keys/release --output release/my-model.sig --ignore-glob '*.log'

      bastion sign my-model/ --key keys/ec --format model-signing

      bastion sign my-model/ --key keys/release --data-manifest train.npz.manifest.json
    """
    from bastion.sign.api import sign_model_detailed

    with _hash_progress(not json_out) as (advance, set_total):
        signed = sign_model_detailed(
            model_dir,
            key,
            output=output,
            password=_password(password_env),
            ignore=ignore,
            ignore_globs=ignore_glob,
            format=sig_format,
            certificate=certificate,
            certificate_chain=certificate_chain,
            insecure_key_permissions=insecure_key_permissions,
            force=force,
            shard_size=shard_size,
            allow_symlinks=allow_symlinks,
            workers=workers,
            progress=advance,
            on_total=set_total,
            data_manifest=data_manifest,
        )
    manifest = signed.manifest
    link = manifest.training_data
    if json_out:
        print_json(
            {
                "signature": str(signed.path),
                "model": manifest.model_name,
                "files": len(manifest.resources),
                "total_bytes": manifest.total_bytes,
                "root_digest": manifest.root_digest,
                "key_id": signed.key_id,
                "training_data": link.to_json() if link is not None else {},
            }
        )
    else:
        typer.echo(
            f"signed {len(manifest.resources)} files ({_size(manifest.total_bytes)}) of {shown(str(model_dir))} "
            f"-> {shown(str(signed.path))}\n"
            f"root sha256 {manifest.root_digest}, key {signed.key_id}"
            + (f"\ntraining data: {shown(link.name)} sha256 {link.sha256}" if link is not None else "")
        )
    raise typer.Exit(EXIT_OK)


@handle_errors
def verify_command(
    model_dir: Path = typer.Argument(..., help="Folder holding the model's files."),
    pub: Path | None = typer.Option(
        None, "--pub", "-p", help="Public key (the .pub file from `bastion keygen`, or model-signing's)."
    ),
    ca_bundle: Path | None = typer.Option(
        None, "--ca-bundle", help="PEM CA certificates to validate a certificate signature's chain against."
    ),
    signature: Path | None = typer.Option(
        None, "--signature", "-s", help="Signature file (default MODEL_DIR/model.sig)."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Hashing threads (default: cores + 4)."),
    data_manifest: Path | None = typer.Option(
        None,
        "--data-manifest",
        help="Also check that this data manifest is byte for byte the one the signature names.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.", metavar=""),
) -> None:
    """Check MODEL_DIR against its signature: exit 0 intact, 1 names every difference, 2 could not check.

    Reads Bastion's and OpenSSF model-signing's signatures, key-based (--pub) or certificate-based
    (--ca-bundle). The signature is checked before anything it claims is used.

    Examples:

      bastion verify my-model/ --pub keys/release.pub

      bastion verify my-model/ --pub keys/release.pub --signature release/my-model.sig --json

      bastion verify my-model/ --ca-bundle ca.pem

      bastion verify my-model/ --pub keys/release.pub --data-manifest train.npz.manifest.json
    """
    from bastion.sign import verify_model

    with _hash_progress(not json_out) as (advance, set_total):
        result = verify_model(
            model_dir,
            pub,
            signature=signature,
            ca_bundle=ca_bundle,
            workers=workers,
            progress=advance,
            on_total=set_total,
            data_manifest=data_manifest,
        )
    td = result.training_data
    link = f"training data: {shown(str(td['name']))} sha256 {td['sha256']}" if td else ""
    if link and result.training_data_ok:
        link += " (matches --data-manifest)"
    if json_out:
        print_json(result.to_dict())
    elif result.ok:
        typer.echo(
            f"verified: {result.files} files ({_size(result.total_bytes)}) of {shown(str(model_dir))} match the "
            f"{result.format} signature by {'certificate ' + result.signer if result.signer else 'key'} "
            f"{result.key_id}\nroot sha256 {result.root_digest}" + (f"\n{link}" if link else "")
        )
    else:
        for line in result.reasons:
            typer.echo(f"{shown(str(model_dir))}: {line}")
        if link:
            typer.echo(link)
        parts = [
            f"{len(result.changed)} changed",
            f"{len(result.added)} added",
            f"{len(result.missing)} missing",
        ]
        if result.training_data_ok is False:
            parts.append("training data manifest does not match")
        parts.append("signature valid" if result.signature_ok else "signature INVALID")
        typer.echo(f"FAILED: {shown(str(model_dir))}: {', '.join(parts)}")
    sys.stdout.flush()
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)
