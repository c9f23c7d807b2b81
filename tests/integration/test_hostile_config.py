"""Config files written by an attacker or a careless user cannot stop or freeze discovery.

One test per kind of file that used to: each writes the file into a running discovery's
config tree, then checks, for a few seconds, that discovery keeps answering ``/ready`` and
xDS within a second each, that the file is reported with its name and what is wrong (and
how to raise a limit), and that the last good config is still what is served.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pilotfish.core.xds import types
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import http, wait_until
from pilotfish.testing.xds_client import fetch

GOOD = WEB_SERVICE
CLUSTER = "outbound|80||web.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("hostile")) as mesh:
        mesh.write("b-good.yaml", GOOD)
        mesh.start_discovery()
        yield mesh


def answers(mesh: LocalMesh) -> None:
    """/ready and a CDS request each answered within a second, with the good config."""
    started = time.monotonic()
    assert http(f"{mesh.debug}/ready", timeout=1).status == 200
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    reply = fetch(f"127.0.0.1:{mesh.xds_port}", types.CLUSTER, timeout=1)
    assert time.monotonic() - started < 1.0
    names = set()
    for packed in reply.resources:
        from envoy.config.cluster.v3 import cluster_pb2

        names.add(cluster_pb2.Cluster.FromString(packed.value).name)
    assert CLUSTER in names


def error_for(mesh: LocalMesh, name: str) -> dict:
    def found() -> dict | None:
        for error in http(f"{mesh.debug}/debug/config_errors").json():
            if error["file"].endswith(name):
                return error
        return None

    return wait_until(found, 10, what=f"an error for {name}")


def attacked(mesh: LocalMesh, name: str, seconds: float = 2.0) -> dict:
    """Keep checking discovery answers while it deals with the file; return its error."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers(mesh)
        time.sleep(0.1)
    error = error_for(mesh, name)
    answers(mesh)
    mesh.processes[0].check_running()
    return error


def remove(mesh: LocalMesh, name: str) -> None:
    os.unlink(mesh.config_dir / name)
    wait_until(lambda: not any(e["file"].endswith(name) for e in http(
        f"{mesh.debug}/debug/config_errors").json()), 10, what=f"{name}'s error to go")


def alias_bomb(levels: int, fan: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb, namespace: shop}\n"
            "data:\n" + "".join(f"  {line}\n" for line in lines))


def test_an_integer_literal_of_5000_digits(mesh: LocalMesh):
    mesh.write("a-int.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
               "spec: {n: " + "9" * 5000 + "}\n")
    error = attacked(mesh, "a-int.yaml")
    assert error["line"] == 4 and "number of 5,000 digits" in error["message"]
    remove(mesh, "a-int.yaml")


def test_json_nested_1200_deep(mesh: LocalMesh):
    mesh.write("a-deep.json", "[" * 1200 + "]" * 1200)
    error = attacked(mesh, "a-deep.json")
    assert "nesting depth is over the limit of 100" in error["message"]
    assert "discovery.configLimits.maxDepth" in error["message"]
    remove(mesh, "a-deep.json")


def test_a_link_to_dev_zero(mesh: LocalMesh):
    os.symlink("/dev/zero", mesh.config_dir / "a-zero.yaml")
    error = attacked(mesh, "a-zero.yaml")
    assert "a link to /dev/zero, outside the config tree" in error["message"]
    remove(mesh, "a-zero.yaml")


def test_a_fifo_does_not_block_the_loop(mesh: LocalMesh):
    os.mkfifo(mesh.config_dir / "a-fifo.yaml")
    error = attacked(mesh, "a-fifo.yaml")
    assert "a FIFO, not a regular file" in error["message"]
    remove(mesh, "a-fifo.yaml")


@pytest.mark.parametrize(("levels", "size"), [(9, 626), (7, 508)])
def test_yaml_alias_bombs(mesh: LocalMesh, levels: int, size: int):
    text = alias_bomb(levels, 10)
    assert len(text) < size + 120  # the sizes of the reported bombs, give or take names
    mesh.write(f"a-bomb{levels}.yaml", text)
    error = attacked(mesh, f"a-bomb{levels}.yaml")
    assert "nodes (aliases expanded) is over the limit of 200,000" in error["message"]
    remove(mesh, f"a-bomb{levels}.yaml")


def test_fifty_megabytes_of_virtual_services(mesh: LocalMesh):
    one = ("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
           "metadata: {{name: vs-{i}, namespace: shop}}\nspec: {{hosts: [h{i}.example.com]}}\n")
    staged = mesh.workdir / "a-huge.yaml"
    with staged.open("w") as out:
        written, i = 0, 0
        while written < 50 * 1024 * 1024:
            written += out.write(one.format(i=i))
            i += 1
    os.replace(staged, mesh.config_dir / "a-huge.yaml")  # whole, as an editor saves
    error = attacked(mesh, "a-huge.yaml")
    assert "its size in bytes is over the limit of 16,777,216" in error["message"]
    assert "discovery.configLimits.maxFileSize" in error["message"]
    remove(mesh, "a-huge.yaml")


def test_a_large_valid_tree_loads_off_the_event_loop(mesh: LocalMesh):
    """Thousands of valid objects: parsed and validated in a worker thread, so discovery
    keeps answering while they load, then serves them."""
    for part in range(8):
        mesh.write(f"c-many-{part}.yaml", "".join(
            f"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: se-{part}-{i}, namespace: shop}}\n"
            f"spec: {{hosts: [h{part}-{i}.example.com], ports: [{{number: 80, name: http,"
            f" protocol: HTTP}}], resolution: DNS}}\n" for i in range(500)))
    deadline = time.monotonic() + 60
    while not any(s["hostname"] == "h7-499.example.com"
                  for s in http(f"{mesh.debug}/debug/registryz", timeout=5).json()):
        answers(mesh)
        assert time.monotonic() < deadline, "the tree never loaded"
        time.sleep(0.05)
    for part in range(8):
        os.unlink(mesh.config_dir / f"c-many-{part}.yaml")


def test_duplicate_keys_are_an_error(mesh: LocalMesh):
    mesh.write("a-dup.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: dup, "
               "namespace: shop}\nspec:\n  type: ClusterIP\n  type: NodePort\n")
    error = attacked(mesh, "a-dup.yaml", seconds=0.5)
    assert error["line"] == 6
    assert "duplicate key 'type' (first at line 5)" in error["message"]
    remove(mesh, "a-dup.yaml")


def test_a_file_redefining_another_files_object_is_reported_with_both(mesh: LocalMesh):
    changed = GOOD.replace("port: 80}", "port: 8080}")
    mesh.write("a-redefine.yaml", changed)  # sorts before b-good.yaml: it wins
    error_for(mesh, "b-good.yaml")
    errors = {e["name"]: e for e in http(f"{mesh.debug}/debug/config_errors").json()
              if e["file"].endswith("b-good.yaml")}
    assert set(errors) == {"web", "web-1"}  # the Service and the Pod, both redefined
    assert errors["web"]["severity"] == "warning" and errors["web"]["line"] == 1
    assert (f"also defined in {mesh.config_dir / 'a-redefine.yaml'}:1; that one is used"
            in errors["web"]["message"])
    os.unlink(mesh.config_dir / "a-redefine.yaml")
    wait_until(lambda: not any(e["name"] == "web" for e in http(
        f"{mesh.debug}/debug/config_errors").json()), 10, what="the conflict to clear")
    answers(mesh)
