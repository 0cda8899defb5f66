# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Push a converted checkpoint to a Hub server on 127.0.0.1 and load it back as remote code in a clean subprocess.

No self-hosted Hub server that accepts huggingface_hub uploads can be installed here (hf-local-hub's PyPI wheel is only
a client: its server is a Go program that needs Go >= 1.25 and the Go module proxy; olah is a download-only mirror),
so this file also contains a small Hub-protocol HTTP server (stdlib only) that the fixture runs in its own process:
it speaks the real wire protocol huggingface_hub uses (repo creation, branches, `preupload`, the LFS batch API with
basic PUT transfers, the NDJSON `commit` endpoint, `resolve` downloads with the X-Repo-Commit / ETag / X-Linked-*
headers and X-Error-Code errors, bearer-token auth for writes). The client side is the unmodified huggingface_hub and
transformers. Run it by hand with: python tests/test_hub.py serve --port 8999 --token secret
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "original-crammed-fff-tiny"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".model", ".msgpack", ".h5")


# ----------------------------------------------------------------------------------------------------------------------
# the Hub-protocol server (runs as `python tests/test_hub.py serve ...`)


class HubState:
    def __init__(self, user: str, token: str):
        self.user, self.token = user, token
        self.lock = threading.Lock()
        self.blobs: dict[str, bytes] = {}  # sha256 -> content (LFS objects)
        self.repos: dict[str, dict] = {}  # repo_id -> {"private", "branches": {name: sha}, "commits": {sha: files}}


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass by serve()

    def log_message(self, fmt, *args):  # keep pytest output clean; errors are reported through responses
        if os.environ.get("HUB_SERVER_VERBOSE"):
            sys.stderr.write("hub: " + fmt % args + "\n")

    # --- helpers
    def _base(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(chunks)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.state.token}"

    def _require_write(self) -> bool:
        if not self._authorized():
            self._error(401, "Invalid credentials in Authorization header")
            return False
        return True

    def _repo(self, repo_id: str, write: bool = False) -> dict | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo["private"] and not self._authorized()):
            self._error(404 if self._authorized() else 401, f"Repository {repo_id} not found", "RepoNotFound")
            return None
        return repo

    def _revision(self, repo: dict, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return None

    # --- routing
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def _route(self, method: str):
        path = urlsplit(self.path).path
        routes = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", r"/api/models/([^/]+/[^/]+)/branch/(.+)", self.create_branch),
            ("POST", r"/api/models/([^/]+/[^/]+)/preupload/(.+)", self.preupload),
            ("POST", r"/api/models/([^/]+/[^/]+)/commit/(.+)", self.commit),
            ("POST", r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-upload/([0-9a-f]{64})", self.lfs_put),
            ("GET", r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", self.tree),
            ("GET", r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", self.model_info),
            ("HEAD", r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.resolve),
            ("GET", r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                try:
                    with self.state.lock:
                        handler(*match.groups())
                except Exception as err:  # report server bugs to the client instead of hanging it
                    self._error(500, f"server error: {type(err).__name__}: {err}")
                return
        self._error(404, f"no route for {method} {path}")

    # --- endpoints
    def whoami(self):
        if not self._require_write():
            return
        self._json(200, {"type": "user", "name": self.state.user, "orgs": [], "auth": {"accessToken": {"role": "write"}}})

    def validate_yaml(self):
        import yaml  # a dependency of huggingface_hub

        content = json.loads(self._body())["content"]
        errors = []
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                meta, errors = None, [{"message": f"invalid YAML: {err}"}]
            if not errors and not isinstance(meta, dict):
                errors.append({"message": "metadata must be a YAML mapping"})
            elif not errors:
                for key in ("license", "pipeline_tag", "library_name"):
                    if key in meta and not isinstance(meta[key], str):
                        errors.append({"message": f'"{key}" must be a string'})
                for index in meta.get("model-index", []) or []:
                    for result in index.get("results", []):
                        if "task" not in result or "dataset" not in result or "metrics" not in result:
                            errors.append({"message": "model-index results need task, dataset and metrics"})
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def create_repo(self):
        if not self._require_write():
            return
        payload = json.loads(self._body() or b"{}")
        if payload.get("type", "model") != "model":
            return self._error(400, "this server hosts model repos only")
        repo_id = f"{payload.get('organization') or self.state.user}/{payload['name']}"
        url = f"{self._base()}/{repo_id}"
        if repo_id in self.state.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        initial = hashlib.sha1(f"init {repo_id} {time.time()}".encode()).hexdigest()
        private = payload.get("private") or payload.get("visibility") == "private"
        self.state.repos[repo_id] = {"private": bool(private), "branches": {"main": initial}, "commits": {initial: {}}}
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def create_branch(self, repo_id, branch):
        if not self._require_write() or (repo := self._repo(repo_id)) is None:
            return
        branch = unquote(branch)
        if branch in repo["branches"]:
            return self._error(409, f"Reference already exists: refs/heads/{branch}")
        payload = json.loads(self._body() or b"{}")
        start = self._revision(repo, payload.get("startingPoint") or "main")
        if start is not None:
            repo["branches"][branch] = start
            self._json(200, {})

    def preupload(self, repo_id, revision):
        if not self._require_write() or (repo := self._repo(repo_id)) is None:
            return
        files = json.loads(self._body())["files"]
        sha = repo["branches"].get(unquote(revision))
        existing = repo["commits"][sha] if sha else {}
        out = []
        for item in files:
            lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] > 10 * 2**20
            entry = {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if item["path"] in existing:
                entry["oid"] = existing[item["path"]]["oid"]
            out.append(entry)
        self._json(200, {"files": out, "commitOid": sha})

    def lfs_batch(self, repo_id):
        if not self._require_write() or self._repo(repo_id) is None:
            return
        payload = json.loads(self._body())
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            return self._error(400, "only basic uploads are supported")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.blobs:  # no actions = already stored
                entry["actions"] = {"upload": {"href": f"{self._base()}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   headers={"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, oid):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "uploaded content does not match its sha256 oid")
        self.state.blobs[oid] = data
        self._send(200)

    def commit(self, repo_id, revision):
        if not self._require_write() or (repo := self._repo(repo_id)) is None:
            return
        revision = unquote(revision)
        if revision not in repo["branches"]:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "commit payload must start with a header line")
        files = dict(repo["commits"][repo["branches"][revision]])
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, f"unsupported encoding {value.get('encoding')!r}")
                data = base64.b64decode(value["content"])
                files[value["path"]] = {"lfs": False, "content": data, "oid": _git_blob_sha1(data), "size": len(data)}
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.state.blobs:
                    return self._error(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                data = self.state.blobs[value["oid"]]
                files[value["path"]] = {"lfs": True, "content": data, "oid": value["oid"], "size": len(data)}
            elif line["key"] in ("deletedFile", "deletedFolder"):
                prefix = value["path"].rstrip("/")
                for path in [p for p in files if p == prefix or p.startswith(prefix + "/")]:
                    del files[path]
            else:
                return self._error(400, f"unsupported commit operation {line['key']!r}")
        sha = hashlib.sha1(json.dumps([repo_id, revision, lines[0], sorted((p, f["oid"]) for p, f in files.items()),
                                       time.time()]).encode()).hexdigest()
        repo["commits"][sha] = files
        repo["branches"][revision] = sha
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self._base()}/{repo_id}/commit/{sha}"})

    def model_info(self, repo_id, revision=None):
        if (repo := self._repo(repo_id)) is None or (sha := self._revision(repo, revision or "main")) is None:
            return
        files = repo["commits"][sha]
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"],
                         "siblings": [{"rfilename": p} for p in sorted(files)]})

    def tree(self, repo_id, revision, prefix=None):
        if (repo := self._repo(repo_id)) is None or (sha := self._revision(repo, revision)) is None:
            return
        prefix = unquote(prefix or "").strip("/")
        entries = []  # a flat (recursive) listing; folders are implied by the paths
        for path, entry in sorted(repo["commits"][sha].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            item = {"type": "file", "path": path, "size": entry["size"], "oid": _git_blob_sha1(entry["content"])}
            if entry["lfs"]:
                item["lfs"] = {"oid": entry["oid"], "size": entry["size"], "pointerSize": 134}
            entries.append(item)
        self._json(200, entries)

    def resolve(self, repo_id, revision, filename):
        if (repo := self._repo(repo_id)) is None or (sha := self._revision(repo, revision)) is None:
            return
        entry = repo["commits"][sha].get(unquote(filename))
        if entry is None:
            return self._error(404, f"Entry not found: {filename}", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["oid"]}"', "X-Linked-Size": entry["size"]})
        self._send(200, entry["content"], headers, content_type="application/octet-stream")


def serve(port: int, token: str, user: str = "tester"):
    handler = type("Handler", (HubHandler,), {"state": HubState(user, token)})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"serving on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    serve(args.port, args.token)
    sys.exit(0)


# ----------------------------------------------------------------------------------------------------------------------
# tests

import pytest  # noqa: E402

if str(REPO_ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(REPO_ROOT))

TOKEN = "hf_local_test_token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port), "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(tmp_path_factory.mktemp("hub")),
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"the local Hub server did not start on {endpoint}:\n{out}")
            time.sleep(0.1)
    yield endpoint
    proc.kill()
    proc.wait(timeout=10)


def _env(endpoint: str, tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp / "hf_home"),  # empty cache, no stored login
        HF_HUB_DISABLE_XET="1",  # the LFS protocol (the server has no xet storage)
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONNOUSERSITE="1",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def converted_mlm(tmp_path_factory):
    if not (FIXTURES / "mlm").is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (CI clones shared/ beside the repo)")
    from conversion.convert_original_checkpoint import convert_checkpoint

    return convert_checkpoint(FIXTURES / "mlm", tmp_path_factory.mktemp("conv") / "ultrafastbert-tiny-mlm")


PUSH_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from conversion.push_to_hub import push_checkpoint
print(push_checkpoint({ckpt!r}, {repo_id!r}, revision={revision!r}, commit_message="test push"))
"""

# Makes `import modeling_ultrafastbert` fail, as on a machine without the package: the editable install would
# otherwise provide it (and register the model with the Auto classes without any remote code).
BLOCKER = """
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_ultrafastbert" or name.startswith("modeling_ultrafastbert."):
            raise ImportError("modeling_ultrafastbert is blocked in this test")
        return None

sys.meta_path.insert(0, _Block())
"""

LOAD_SCRIPT = """
import sys, json
try:
    import modeling_ultrafastbert
    raise SystemExit("the package is importable: the remote-code test would prove nothing")
except ImportError:
    pass
assert not any(p.startswith({repo!r}) for p in sys.path), sys.path
import torch
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained({repo_id!r}, revision={revision!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
model.config.fff_kernel = "torch"  # the native kernels have their own tests; keep this process free of compilers
ids = torch.tensor({ids!r})
mask = torch.tensor({mask!r})
out = {{}}
for mode in ("conditional", "dense"):
    model.config.fff_inference = mode
    with torch.no_grad():
        out[mode] = model(input_ids=ids, attention_mask=mask).logits.tolist()
print("RESULT" + json.dumps(out))
"""


def _run(code: str, env: dict, cwd: Path, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("revision", [None, "v1"])
def test_push_then_load_remote_code_from_clean_subprocess(hub_server, converted_mlm, tmp_path, revision):
    import torch
    from transformers import AutoModelForMaskedLM

    repo_id = f"tester/ultrafastbert-tiny-{revision or 'main'}"
    push = _run(PUSH_SCRIPT.format(repo=str(REPO_ROOT), ckpt=str(converted_mlm), repo_id=repo_id, revision=revision),
                _env(hub_server, tmp_path / "push", HF_TOKEN=TOKEN), cwd=tmp_path)
    assert push.returncode == 0, push.stderr[-4000:]
    assert f"{repo_id}/commit/" in push.stdout
    import urllib.request

    with urllib.request.urlopen(f"{hub_server}/api/models/{repo_id}/tree/{revision or 'main'}") as response:
        tree = {entry["path"]: entry for entry in json.load(response)}
    # weights went through the LFS batch protocol, small text files inline in the NDJSON commit
    assert "lfs" in tree["model.safetensors"] and "lfs" not in tree["config.json"]
    assert "README.md" in tree and "modeling_ultrafastbert.py" in tree

    blocker_dir = tmp_path / "blocker"
    blocker_dir.mkdir()
    (blocker_dir / "sitecustomize.py").write_text(BLOCKER)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    ids = [[2, 15, 99, 7, 3, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11, 12]]
    mask = [[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8]
    load = _run(LOAD_SCRIPT.format(repo=str(REPO_ROOT), repo_id=repo_id, revision=revision or "main", ids=ids,
                                   mask=mask),
                _env(hub_server, tmp_path / "load", PYTHONPATH=str(blocker_dir)), cwd=workdir)
    assert load.returncode == 0, load.stderr[-4000:]
    remote = json.loads(load.stdout.split("RESULT", 1)[1])

    local = AutoModelForMaskedLM.from_pretrained(converted_mlm).eval()
    with torch.no_grad():
        expected = local(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    for mode in ("conditional", "dense"):
        torch.testing.assert_close(torch.tensor(remote[mode]), expected, atol=1e-5, rtol=0)
    # everything of the checkpoint arrived, remote code included
    snapshot = next((tmp_path / "load" / "hf_home" / "hub").glob("models--tester--*/snapshots/*"))
    for name in ("config.json", "model.safetensors", "modeling_ultrafastbert.py", "configuration_ultrafastbert.py",
                 "fast_feedforward.py"):
        assert (snapshot / name).is_file(), name


def test_push_without_token_is_refused_before_any_request(converted_mlm, tmp_path):
    # an endpoint nobody listens on: a network call would fail with a connection error, not our message
    env = _env(f"http://127.0.0.1:{_free_port()}", tmp_path)
    result = _run(PUSH_SCRIPT.format(repo=str(REPO_ROOT), ckpt=str(converted_mlm), repo_id="tester/x", revision=None),
                  env, cwd=tmp_path)
    assert result.returncode != 0
    assert "PushError" in result.stderr and "no Hugging Face token" in result.stderr, result.stderr[-2000:]
    cli = subprocess.run([sys.executable, str(REPO_ROOT / "conversion" / "push_to_hub.py"), str(converted_mlm),
                          "tester/x"], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "no Hugging Face token" in cli.stderr


def test_server_rejects_a_wrong_token(hub_server, converted_mlm, tmp_path):
    result = _run(PUSH_SCRIPT.format(repo=str(REPO_ROOT), ckpt=str(converted_mlm), repo_id="tester/y", revision=None),
                  _env(hub_server, tmp_path, HF_TOKEN="hf_wrong"), cwd=tmp_path)
    assert result.returncode != 0 and "401" in result.stderr, result.stderr[-2000:]


def test_push_refuses_folders_that_are_not_our_checkpoints(converted_mlm, tmp_path):
    import shutil

    from conversion.push_to_hub import PushError, push_checkpoint

    broken = tmp_path / "broken"
    shutil.copytree(converted_mlm, broken)
    (broken / "modeling_ultrafastbert.py").unlink()
    with pytest.raises(PushError, match="remote-code files missing: modeling_ultrafastbert.py"):
        push_checkpoint(broken, "tester/z", token="unused")
    with pytest.raises(PushError, match="not 'ultrafastbert'"):
        push_checkpoint(FIXTURES / "mlm", "tester/z", token="unused")


UPLOAD_ORIGINAL = """
from huggingface_hub import HfApi
api = HfApi()
api.create_repo({repo_id!r}, exist_ok=True)
api.upload_folder(repo_id={repo_id!r}, folder_path={folder!r}, commit_message="original crammedBERT checkpoint")
"""


def test_convert_from_hub_repo_and_push_with_cli(hub_server, tmp_path):
    if not (FIXTURES / "mlm").is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    import urllib.request

    env = _env(hub_server, tmp_path, HF_TOKEN=TOKEN)
    up = _run(UPLOAD_ORIGINAL.format(repo_id="tester/original-tiny-mlm", folder=str(FIXTURES / "mlm")), env, tmp_path)
    assert up.returncode == 0, up.stderr[-3000:]
    # SRC is a repo id: downloaded from the server (reference outputs included, so the conversion verifies itself)
    out = tmp_path / "converted"
    cli = subprocess.run(
        [sys.executable, str(REPO_ROOT / "conversion" / "convert_original_checkpoint.py"), "tester/original-tiny-mlm",
         str(out), "--push-to-hub", "tester/converted-tiny-mlm"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert (out / "config.json").is_file()
    with urllib.request.urlopen(f"{hub_server}/api/models/tester/converted-tiny-mlm") as response:
        info = json.load(response)
    files = {s["rfilename"] for s in info["siblings"]}
    assert {"config.json", "model.safetensors", "README.md", "modeling_ultrafastbert.py",
            "configuration_ultrafastbert.py", "fast_feedforward.py"} <= files
