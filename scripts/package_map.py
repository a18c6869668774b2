#!/usr/bin/env python3
"""Package the app as a MONAI Application Package (MAP) with ``monai-deploy package``.

    python scripts/package_map.py [--tag biomedclip-zero-shot:1.0.0] [--models models/biomedclip] [--out build/map]

Steps, all offline but the image build:

1. Stage a self-contained application folder: the packager copies ONE folder to
   ``/opt/holoscan/app`` and runs ``python3 /opt/holoscan/app``, while this app's code spans the
   ``app`` and ``operators`` packages. The folder holds both, ``deploy/map_main.py`` as its
   ``__main__.py``, and the container's ``requirements.txt``: the pins of the repository's
   ``requirements.txt`` that the app needs (see ``container_requirements``). The model package is
   staged too, every file readable by the container's non-root user.
2. Write the build context ``OUT/context`` (Dockerfile, ``map/app.json``, ``map/pkg.json``, ``app/``,
   ``models/``, ``pip/requirements.txt``, ``app.config``, ``tools``) through holoscan-cli's own
   packager code, with the artifacts manifest ``deploy/artifacts.json`` instead of GitHub's, and
   ``OUT/build_image.sh``, the ``docker buildx build`` the packager would run on that context.
3. Where Docker with buildx and a running daemon is available, run ``monai-deploy package`` on the
   staged folder to build the image; elsewhere say clearly that no image was built.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from operators.inference.model_package import ModelPackage, ModelPackageError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
APP_CONFIG = ROOT / "app.yaml"
ARTIFACTS_MANIFEST = DEPLOY / "artifacts.json"
APP_PACKAGES = ("app", "operators")
PACKAGER_PINS = {"holoscan-cli": "4.2.0", "holoscan-cu13": "4.2.0"}
#: The container user the packager creates (holoscan-cli's default, made explicit): never root.
CONTAINER_USER = {"username": "holoscan", "uid": "1000", "gid": "1000"}
#: The base image's Python (holoscan-cli 4.2.0's Dockerfile installs python3 3.12.3 on Ubuntu 24.04):
#: dependency markers are evaluated for it, not for the Python running this script.
CONTAINER_PYTHON = "3.12"


class PackagingError(RuntimeError):
    """The MAP cannot be packaged as asked (wrong tool versions, bad model package, bad pins)."""


def check_packager_versions() -> None:
    for name, version in PACKAGER_PINS.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            raise PackagingError(
                f"{name}=={version} is required (found {installed or 'none'}); "
                f"install it with: pip install {name}=={version}"
            )


def _entries(path: Path) -> list[str]:
    """The lines of a requirements-style file, comments and blank lines dropped."""
    return [entry for entry in (line.split("#", 1)[0].strip() for line in path.read_text().splitlines()) if entry]


def read_pins(requirements: Path) -> dict[str, str]:
    """Canonical name -> the ``name==version`` line of a pinned requirements file."""
    pins = {}
    for line in _entries(requirements):
        requirement = Requirement(line)
        if [spec.operator for spec in requirement.specifier] != ["=="]:
            raise PackagingError(f"{requirements}: {line!r} is not pinned with ==")
        pins[canonicalize_name(requirement.name)] = line
    return pins


def _container_marker_environment(extra: str) -> dict[str, str]:
    environment = default_environment()
    environment.update(
        python_version=CONTAINER_PYTHON, python_full_version=f"{CONTAINER_PYTHON}.3", sys_platform="linux",
        platform_system="Linux", platform_machine="x86_64", os_name="posix", extra=extra,
    )
    return environment


def dependency_closure(roots: Iterable[str]) -> set[str]:
    """Every distribution that installing ``roots`` pulls in on the container's platform, from the
    installed distributions' metadata (extras followed, markers evaluated for Linux x86_64, Python 3.12)."""
    wanted: list[tuple[str, frozenset[str]]] = [(canonicalize_name(name), frozenset()) for name in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    closure: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        closure.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: reported by container_requirements as unpinned
        for line in requires:
            requirement = Requirement(line)
            active = requirement.marker is None or any(
                requirement.marker.evaluate(_container_marker_environment(extra)) for extra in ("", *extras)
            )
            if active:
                wanted.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return closure


def container_requirements(requirements: Path, excluded: Path) -> str:
    """The container's requirements.txt: the repository's pins for the closure of every pin that
    the excluded tools (development, tests, model build) do not pull in."""
    pins = read_pins(requirements)
    missing = sorted(name for name in pins if not _installed(name))
    if missing:
        raise PackagingError(f"pinned in {requirements.name} but not installed here: {', '.join(missing)}; run scripts/setup.sh")
    tool_only = dependency_closure(_entries(excluded))
    shipped = dependency_closure(name for name in pins if name not in tool_only)
    unpinned = sorted(shipped - set(pins))
    lines = [
        f"# Generated by scripts/package_map.py from {requirements.name}: the pins the app needs at run time",
        f"# (closure of every pin except the tools in deploy/{excluded.name}).",
    ]
    if unpinned:
        lines.append(f"# Required but not pinned in {requirements.name} (left to pip): {', '.join(unpinned)}")
    lines += [pins[name] for name in sorted(shipped & set(pins))]
    return "\n".join(lines) + "\n"


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _copy_readable(source: Path, dest: Path) -> None:
    """Copy a folder with modes 0644/0755: the container runs as UID 1000 while COPY keeps the
    files' owner (root) and mode, so a 0600 file (a restrictive umask, say) would be unreadable."""
    # symlinks kept: the package's Triton repository links its ONNX model to the package's graph (a copy: +344 MB)
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), copy_function=shutil.copyfile)
    for path in (dest, *dest.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def stage_application(dest: Path) -> None:
    """The folder the packager copies to /opt/holoscan/app: app/, operators/, __main__.py, requirements.txt."""
    dest.mkdir(parents=True)
    for package in APP_PACKAGES:
        _copy_readable(ROOT / package, dest / package)
    shutil.copyfile(DEPLOY / "map_main.py", dest / "__main__.py")
    (dest / "requirements.txt").write_text(container_requirements(ROOT / "requirements.txt", DEPLOY / "not-in-container.txt"))
    for path in (dest / "__main__.py", dest / "requirements.txt"):
        path.chmod(0o644)


def packager_argv(application: Path, tag: str, models: Path, platform: str) -> list[str]:
    """The ``monai-deploy package`` command line (also parsed in-process by write_build_context)."""
    return [
        "monai-deploy", "package", str(application),
        "-c", str(APP_CONFIG), "-t", tag, "--platform", platform, "-m", str(models),
        "--source", str(ARTIFACTS_MANIFEST), "--sdk", "monai-deploy",
        "--username", CONTAINER_USER["username"], "--uid", CONTAINER_USER["uid"], "--gid", CONTAINER_USER["gid"],
    ]


def write_build_context(argv: list[str], context: Path) -> tuple[str, list[str]]:
    """Run holoscan-cli 4.2.0's packaging steps up to, not including, ``docker buildx build``, in
    ``context``; return the image name and the equivalent ``docker buildx build`` command line."""
    from holoscan_cli.__main__ import parse_args, set_up_logging
    from holoscan_cli.packager import packager
    from holoscan_cli.packager.arguments import PackagingArguments
    from holoscan_cli.packager.container_builder import PythonAppBuilder

    args = parse_args(argv)
    set_up_logging("WARN")
    packaging = PackagingArguments(args, str(context))
    packager._create_app_manifest(packaging.application_manifest, str(context))
    packager._create_package_manifest(packaging.package_manifest, str(context))
    builder = PythonAppBuilder(packaging.build_parameters, str(context))
    (platform,) = packaging.platforms
    builder._copy_supporting_files(platform)
    builder._write_dockerfile(platform)
    build = packaging.build_parameters
    build_args = {"UID": build.uid, "GID": build.gid, "UNAME": build.username, "GPU_TYPE": platform.platform_config.value}
    return platform.tag, [
        "docker", "buildx", "build", "--platform", platform.docker_arch, "--tag", platform.tag, "--load",
        *(f"--build-arg={key}={value}" for key, value in build_args.items()),
        "--file", "Dockerfile", ".",
    ]


def docker_can_build() -> bool:
    """Docker CLI with the buildx plugin and a reachable daemon: what ``monai-deploy package`` needs."""
    if shutil.which("docker") is None:
        return False
    checks = (["docker", "buildx", "version"], ["docker", "info"])
    return all(subprocess.run(check, capture_output=True, timeout=60).returncode == 0 for check in checks)


def stage(staging: Path, tag: str, package_root: Path, platform: str) -> list[str]:
    """Stage the application folder and a copy of the model package; return the packager command."""
    application, models = staging / "app", staging / "models" / package_root.name
    stage_application(application)
    _copy_readable(package_root, models)
    # holoscan-cli takes a folder holding files as one model, and each subfolder as another model: the
    # package is handed inside its parent, so that its own subfolder (the Triton repository) stays part of it
    return packager_argv(application, tag, models.parent, platform)


def write_outputs(command: list[str], out: Path) -> tuple[str, Path]:
    """``out/context`` (replaced only once complete) and ``out/build_image.sh``; return the image name and the script."""
    context, partial = out / "context", out / "context.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    image, build_command = write_build_context(command, partial)
    shutil.rmtree(context, ignore_errors=True)
    partial.rename(context)
    script = out / "build_image.sh"
    script.write_text(
        "#!/bin/sh\n# The image build monai-deploy package runs, on the build context beside this script.\n"
        f'set -e\ncd "$(dirname "$0")/context"\n{shlex.join(build_command)}\n'
    )
    script.chmod(0o755)
    return image, script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", "-t", default="biomedclip-zero-shot:1.0.0", help="image NAME:TAG")
    parser.add_argument("--models", "-m", type=Path, default=ROOT / "models" / "biomedclip",
                        help="model package folder (scripts/build_model.py)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "map", help="output folder for the build context (replaced)")
    parser.add_argument("--platform", default="x86_64", help="packager --platform (default x86_64)")
    parser.add_argument("--context-only", action="store_true", help="write the build context; do not build the image even where Docker can")
    args = parser.parse_args(argv)

    try:
        check_packager_versions()
        package = ModelPackage.load(args.models)  # refuse to ship an incomplete or corrupt package
    except (PackagingError, ModelPackageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if package.is_random_init:
        print(f"warning: {package.root} has RANDOM weights: the MAP will produce no clinical findings", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="biomedclip-map-") as staging:
        command = stage(Path(staging), args.tag, package.root, args.platform)
        image, script = write_outputs(command, args.out.resolve())
        contents = "Dockerfile, map/app.json, map/pkg.json, app/, models/, pip/requirements.txt"
        print(f"MAP build context written to {script.parent / 'context'} ({contents})")
        print(f"image name (the packager adds platform, configuration and architecture): {image}")
        if args.context_only or not docker_can_build():
            reason = "--context-only" if args.context_only else "Docker with buildx and a running daemon is not available here"
            print(f"NO IMAGE WAS BUILT ({reason}). Build it on a Docker host with: sh {script}")
            return 0
        command[0] = str(Path(sys.executable).parent / "monai-deploy")
        print("building the image:", shlex.join(command))
        return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
