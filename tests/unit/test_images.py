"""What the image build decides without building: names, labels, and the input keys that
say when an image must be built again (and when not)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import shutil
import sys
import tarfile
from importlib.metadata import packages_distributions
from pathlib import Path

import grimp
import pytest
from packaging.utils import canonicalize_name

from aios.stack.components import REPO_ROOT, versions
from aios.stack.images import archive, ingredients, inputs, recipe


def test_references_name_each_image_by_what_it_packages() -> None:
    version = recipe.project_version()
    assert recipe.reference("aios") == f"ghcr.io/aios-dev/aios:{version}"
    assert recipe.reference("aios-edge") == f"ghcr.io/aios-dev/aios-edge:{version}"
    assert recipe.reference("tritonserver") == "ghcr.io/aios-dev/tritonserver:2.51.0"
    coredns = versions()["COREDNS_VERSION"]
    assert recipe.reference("coredns") == f"ghcr.io/aios-dev/coredns:{coredns.removeprefix('v')}"
    assert recipe.reference("pause") == f"ghcr.io/aios-dev/pause:{recipe.PAUSE_VERSION}"
    with pytest.raises(ValueError, match="unknown image"):
        recipe.reference("busybox")


def containerfile_labels(name: str) -> dict[str, str]:
    """The LABEL instructions of images/<name>/Containerfile."""
    text = (REPO_ROOT / "images" / name / "Containerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("LABEL "):
            for pair in shlex.split(line.removeprefix("LABEL ")):
                key, value = pair.split("=", 1)
                found[key] = value
    return found


@pytest.mark.parametrize("name", recipe.NAMES)
def test_every_image_carries_the_oci_labels(name: str) -> None:
    found = {**containerfile_labels(name), **recipe.labels(name, "0123abc")}
    prefix = "org.opencontainers.image."
    assert found[prefix + "title"] == name
    assert found[prefix + "version"] == recipe.version(name)
    assert found[prefix + "revision"] == "0123abc"
    assert found[prefix + "source"] == recipe.SOURCE_URL
    assert found[prefix + "created"] == recipe.CREATED == "1970-01-01T00:00:00Z"
    assert "Apache-2.0" in found[prefix + "licenses"]
    # What changes from build to build is set by the build (--label), never baked into a
    # cached Containerfile step.
    assert not {"version", "revision", "created"} & {
        k.removeprefix(prefix) for k in containerfile_labels(name)
    }


@pytest.mark.parametrize("name", recipe.NAMES)
def test_every_image_runs_as_the_non_root_user(name: str) -> None:
    text = (REPO_ROOT / "images" / name / "Containerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users == ["65532:65532"]


def project_tree(root: Path) -> None:
    (root / "pyproject.toml").write_text('[project]\nname = "aios"\nversion = "0.1.0"\n')
    (root / "README.md").write_text("# aios\n")
    (root / "crds" / "aios" / "api").mkdir(parents=True)
    (root / "crds" / "aios" / "api" / "base.py").write_text("X = 1\n")
    (root / "operator" / "aios" / "operator" / "__pycache__").mkdir(parents=True)
    (root / "operator" / "aios" / "operator" / "main.py").write_text("def main(): ...\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("def test(): ...\n")


def project_digest(root: Path) -> str:
    return inputs.digest_files(inputs.project_files(root), root)


def test_the_project_key_follows_what_goes_into_the_wheel_and_nothing_else(
    tmp_path: Path,
) -> None:
    project_tree(tmp_path)
    before = project_digest(tmp_path)

    # Not in the wheel, or not content: the key stays.
    (tmp_path / "tests" / "test_x.py").write_text("def test(): assert True\n")
    (tmp_path / "operator" / "aios" / "operator" / "__pycache__" / "main.pyc").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("unrelated\n")
    module = tmp_path / "crds" / "aios" / "api" / "base.py"
    module.touch()
    module.chmod(0o600)
    assert project_digest(tmp_path) == before

    # Code, a new module, the metadata: a new key each time.
    seen = {before}
    for change in (
        lambda: module.write_text("X = 2\n"),
        lambda: (tmp_path / "crds" / "aios" / "api" / "new.py").write_text(""),
        lambda: (tmp_path / "README.md").write_text("# aios, the readme\n"),
        lambda: (tmp_path / "pyproject.toml").write_text(
            '[project]\nname = "aios"\nversion = "0.2.0"\n'
        ),
    ):
        change()
        seen.add(project_digest(tmp_path))
    assert len(seen) == 5


def test_a_renamed_file_is_a_new_input(tmp_path: Path) -> None:
    project_tree(tmp_path)
    before = project_digest(tmp_path)
    api = tmp_path / "crds" / "aios" / "api"
    (api / "base.py").rename(api / "common.py")
    assert project_digest(tmp_path) != before


def wheelhouse_tree(root: Path, dependencies: list[str], pins: list[str]) -> None:
    (root / "hack").mkdir(exist_ok=True)
    (root / "hack" / "constraints.txt").write_text("\n".join(pins) + "\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "aios"\nversion = "0.1.0"\n'
        f"dependencies = {json.dumps(dependencies)}\n"
        '[project.optional-dependencies]\nmodel-server = ["kserve>=0.13"]\n'
    )


def test_the_wheelhouse_key_follows_the_requirements_and_their_pins(tmp_path: Path) -> None:
    wheelhouse_tree(tmp_path, ["numpy>=1.26"], ["numpy==1.26.4", "kserve==0.21.0"])
    aios, edge = (
        inputs.wheelhouse_key("aios", tmp_path),
        inputs.wheelhouse_key("aios-edge", tmp_path),
    )
    assert aios != edge

    # The same pins written differently (order, comments, spelling of a name) are the same.
    wheelhouse_tree(tmp_path, ["numpy>=1.26"], ["# pins", "KServe==0.21.0", "numpy==1.26.4"])
    assert inputs.wheelhouse_key("aios", tmp_path) == aios

    # A dependency of aios only: aios's wheelhouse changes, the edge agent's does not.
    wheelhouse_tree(tmp_path, ["numpy>=1.26", "rich>=13"], ["numpy==1.26.4", "kserve==0.21.0"])
    assert inputs.wheelhouse_key("aios", tmp_path) != aios
    assert inputs.wheelhouse_key("aios-edge", tmp_path) == edge

    # A new pin changes both.
    wheelhouse_tree(tmp_path, ["numpy>=1.26"], ["numpy==1.26.5", "kserve==0.21.0"])
    assert inputs.wheelhouse_key("aios", tmp_path) != aios
    assert inputs.wheelhouse_key("aios-edge", tmp_path) != edge


def test_the_aios_image_gets_the_core_dependencies_and_kserve_only() -> None:
    with_deps, alone = inputs.requirements("aios")
    names = {canonicalize_name(r.split(">")[0].split("=")[0].split("[")[0]) for r in with_deps}
    assert "kserve" in names
    assert not names & {"nvidia-pytriton", "scikit-learn", "pytest"}
    assert alone == (recipe.PIP,)


def test_the_base_key_follows_its_recipe(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "images" / "base", tmp_path / "images" / "base")
    python, embed = inputs.base_key("python", tmp_path), inputs.base_key("python-embed", tmp_path)
    assert python != embed
    packages = tmp_path / "images" / "base" / "python.packages"
    packages.write_text(packages.read_text() + "tzdata\n")
    assert inputs.base_key("python", tmp_path) != python
    assert inputs.base_key("python-embed", tmp_path) == embed
    hook = tmp_path / "images" / "base" / "customize.sh"
    hook.write_text(hook.read_text() + "# changed\n")
    assert inputs.base_key("python-embed", tmp_path) != embed


def test_the_image_key_changes_with_any_input_and_not_with_their_order() -> None:
    given = {"recipe": "a", "project": "b", "revision": "c"}
    key = inputs.input_key(given)
    assert inputs.input_key(dict(reversed(given.items()))) == key
    for name in given:
        assert inputs.input_key({**given, name: "changed"}) != key
    assert inputs.input_key({**given, "base": "d"}) != key


def test_the_edge_image_installs_exactly_what_the_edge_agent_imports() -> None:
    graph = grimp.build_graph("aios.edge", "aios.api", include_external_packages=True)
    imported = {
        module.split(".")[0]
        for module in graph.find_upstream_modules("aios.edge", as_package=True)
        if not module.startswith("aios")
    } - set(sys.stdlib_module_names)
    distributions = packages_distributions()
    listed = {canonicalize_name(name) for name in recipe.EDGE_REQUIREMENTS}
    needed: set[str] = set()
    for module in imported:
        owners = {canonicalize_name(d) for d in distributions[module]}
        # A namespace package (opentelemetry) spans distributions: the recipe names its own.
        assert owners & listed, f"the edge image lacks {module}"
        needed |= owners if len(owners) == 1 else owners & listed
    assert needed == listed


def oci_layout(root: Path, layer: bytes) -> tuple[str, int]:
    """A one-layer OCI layout as ``buildah push oci:`` writes it; the manifest's digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def add(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    compressed = gzip.compress(layer, mtime=0)
    config = add(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **add(compressed)}
            ],
        }
    ).encode()
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **add(manifest)}
    entry["annotations"] = {"org.opencontainers.image.ref.name": "pause"}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config_size = len(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    return str(entry["digest"]), len(compressed) + config_size + len(manifest)


def test_the_archive_names_the_image_for_containerd(tmp_path: Path) -> None:
    layer = b"a layer" * 1000
    digest, size = oci_layout(tmp_path / "layout", layer)
    built = archive.write_archive("pause", tmp_path / "layout", tmp_path / "pause.tar")
    assert (built.name, built.reference, built.digest) == (
        "pause",
        recipe.reference("pause"),
        digest,
    )
    assert (built.size, built.unpacked_size) == (size, len(layer))
    assert built.pinned_reference == f"ghcr.io/aios-dev/pause@{digest}"
    with tarfile.open(built.archive) as tar:
        names = tar.getnames()
        index = tar.extractfile("index.json")
        assert index is not None
        [entry] = json.load(index)["manifests"]
        assert all(member.mtime == 0 and member.uid == 0 for member in tar)
    assert entry["digest"] == digest
    assert entry["annotations"] == {
        "io.containerd.image.name": recipe.reference("pause"),
        "org.opencontainers.image.ref.name": recipe.version("pause"),
    }
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert names[:2] == ["oci-layout", "index.json"]
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 3

    # Written again from the same layout: the same bytes.
    again = archive.write_archive("pause", tmp_path / "layout", tmp_path / "again.tar")
    assert again.archive.read_bytes() == built.archive.read_bytes()


def test_the_base_leaves_out_the_hosts_files_devices_and_apt(tmp_path: Path) -> None:
    source = tmp_path / "mmdebstrap.tar"
    with tarfile.open(source, "w") as tar:
        for name, kind in (
            ("./dev/", tarfile.DIRTYPE),
            ("./dev/null", tarfile.CHRTYPE),
            ("./etc/", tarfile.DIRTYPE),
            ("./etc/hostname", tarfile.REGTYPE),
            ("./etc/resolv.conf", tarfile.REGTYPE),
            ("./etc/apt/", tarfile.DIRTYPE),
            ("./etc/apt/sources.list.d/0000debian.sources", tarfile.REGTYPE),
            ("./etc/passwd", tarfile.REGTYPE),
            ("./var/lib/apt/lists/lock", tarfile.REGTYPE),
            ("./var/lib/dpkg/status", tarfile.REGTYPE),
            ("./usr/bin/python3.11", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    ingredients.strip_rootfs(source, tmp_path / "rootfs.tar")
    with tarfile.open(tmp_path / "rootfs.tar") as tar:
        kept = [name.removeprefix("./") for name in tar.getnames()]
    assert kept == ["dev", "etc", "etc/passwd", "var/lib/dpkg/status", "usr/bin/python3.11"]
