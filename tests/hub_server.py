"""A small Hugging Face Hub for the tests: the HTTP API that huggingface_hub, transformers and datasets use, served
from memory on 127.0.0.1 with the standard library only.

Repos are git-like: commits with parents, branches and tags, each commit a full snapshot `{path: Blob}`. Files go in
inline (`file`, base64) or through Git LFS (`lfsFile`: the batch endpoint hands out a PUT URL, the bytes are stored by
sha256). Which one is decided by `preupload`, like the Hub: binary files, large ones and usual weight/data suffixes go
through LFS. Xet is never offered (clients must run with HF_HUB_DISABLE_XET=1). Errors carry the Hub's `X-Error-Code`
header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), from which the clients choose their exception.

    hub = HubServer(); hub.start()          # or the `hub` fixture of test_hub_roundtrip.py
    os.environ["HF_ENDPOINT"] = hub.url     # in the client's process, before importing huggingface_hub
    hub.files("tester/model")               # {path: bytes} of a revision, for assertions
    hub.stop()

Not served: Xet, pull requests (`create_pr`), pagination (every listing fits in one page), Spaces' runtime, orgs.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import re
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = "tester"
TOKEN = "hf_testtoken0123456789"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # API path segment -> repo type
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Sent through LFS whatever their size (a subset of the Hub's default .gitattributes), like binary or large files.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".parquet", ".arrow", ".tar", ".gz", ".zip",
                ".npz", ".npy", ".pkl", ".h5", ".msgpack", ".model", ".png", ".jpg", ".jpeg", ".webp")
LFS_MIN_SIZE = 1_000_000
HEX40 = re.compile(r"[0-9a-f]{40}")
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:
        """The git object id: of the content, or of the LFS pointer file."""
        return git_sha1(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    id: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    message: str
    date: str = field(default_factory=now)


@dataclass
class Repo:
    type: str
    id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=now)

    def resolve(self, revision: str) -> Commit | None:
        commit_id = self.branches.get(revision) or self.tags.get(revision)
        if commit_id is None and HEX40.fullmatch(revision):
            commit_id = revision
        return self.commits.get(commit_id) if commit_id else None

    def history(self, commit: Commit) -> list[Commit]:
        out = [commit]
        while out[-1].parent:
            out.append(self.commits[out[-1].parent])
        return out

    def last_commit(self, head: Commit, path: str) -> Commit:
        """The newest commit that changed `path` (a file, or anything under a folder)."""

        def state(commit: Commit):
            return sorted((p, b.oid) for p, b in commit.files.items() if p == path or p.startswith(path + "/"))

        history, current = self.history(head), state(head)
        for commit, older in itertools.pairwise(history):
            if state(older) != current:
                return commit
        return history[-1]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """The Hub's state and the HTTP server around it (a thread; `start` binds a free port on 127.0.0.1)."""

    def __init__(self, token: str = TOKEN):
        self.token, self.repos, self.lfs_objects = token, {}, {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request served
        self.lock = threading.RLock()
        self.upload_secret = secrets.token_hex(8)
        self._ids = itertools.count()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- state, also for direct use by the tests -----------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_type} {repo_id} not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id)
            self.commit(repo, "main", {".gitattributes": Blob(GITATTRIBUTES, False)}, [], "initial commit")
            return repo

    def commit(self, repo: Repo, branch: str, add: dict[str, Blob], delete: list[tuple[str, bool]], title: str,
               message: str = "", parent: str | None = None) -> Commit:
        """A commit on `branch`: `add` {path: Blob}, then `delete` [(path, is_folder)]; `parent` as the client saw."""
        with self.lock:
            head = repo.resolve(branch) if branch in repo.branches else None
            if repo.commits and head is None:
                raise HubError(404, f"Invalid rev id: {branch} is not a branch of {repo.id}", "RevisionNotFound")
            if parent is not None and head is not None and parent != head.id:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files) if head else {}
            files.update(add)
            for path, is_folder in delete:
                gone = [p for p in files if p.startswith(path.rstrip("/") + "/")] if is_folder else [path] * (
                    path in files)
                if not gone:
                    raise HubError(404, f"{path} does not exist in {repo.id}", "EntryNotFound")
                for p in gone:
                    del files[p]
            seed = json.dumps([head.id if head else None, sorted((p, b.oid) for p, b in files.items()), title,
                               next(self._ids)])
            commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), head.id if head else None, files, title, message)
            repo.commits[commit.id] = commit
            repo.branches[branch] = commit.id
            return commit

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"{revision} is not a revision of {repo_id}")
            return {path: blob.data for path, blob in commit.files.items()}

    def lfs_paths(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> set[str]:
        with self.lock:
            return {p for p, b in self.repo(repo_id, repo_type).resolve(revision).files.items() if b.lfs}

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        large = size >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample
        return "lfs" if large and size > 0 else "regular"


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to a method of its own, with the Hub's error headers."""

    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    hub: HubServer

    def log_message(self, format, *args):  # noqa: A002 - quiet; `hub.requests` keeps the log
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        with self.hub.lock:
            self.hub.requests.append((self.command, self.path, status))

    def _json(self, value, status: int = 200, content_type: str = "application/json"):
        self._send(status, json.dumps(value).encode(), content_type=content_type)

    def _handle(self):
        try:
            self.body = self._read_body()
            parts = urllib.parse.urlsplit(self.path)
            self.query = urllib.parse.parse_qs(parts.query)
            segments = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
            self._route(segments)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, json.dumps({"error": err.message}).encode(), headers)
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            self._send(400, json.dumps({"error": f"Bad request: {err!r}"}).encode())

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    def _authorized(self, required: bool) -> None:
        auth = self.headers.get("Authorization")
        if auth is None and not required:
            return
        if auth != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _route(self, s: list[str]):
        method = self.command
        if s[:1] == ["api"]:
            if s == ["api", "whoami-v2"] and method == "GET":
                return self.whoami()
            if s == ["api", "validate-yaml"] and method == "POST":
                return self.validate_yaml()
            if s[1:2] == ["repos"] and s[2:] in (["create"], ["delete"]):
                self._authorized(True)
                return self.create_repo() if s[2] == "create" and method == "POST" else self.delete_repo()
            if len(s) >= 4 and s[1] in TYPES:
                repo_type, repo_id, action, rest = TYPES[s[1]], f"{s[2]}/{s[3]}", s[4:5], s[5:]
                self._authorized(method not in ("GET", "HEAD") and action != ["paths-info"])
                with self.hub.lock:
                    repo = self.hub.repo(repo_id, repo_type)
                    return self._api(repo, method, action[0] if action else None, rest)
        kind = "model"
        if s[:1] in (["datasets"], ["spaces"]):
            kind, s = TYPES[s[0]], s[1:]
        if len(s) >= 5 and s[2] == "resolve" and method in ("GET", "HEAD"):
            self._authorized(False)
            with self.hub.lock:
                repo = self.hub.repo(f"{s[0]}/{s[1]}", kind)
                commit = self._revision(repo, s[3])
                return self.resolve(repo, commit, "/".join(s[4:]))
        if len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"]:
            self._authorized(True)
            with self.hub.lock:
                self.hub.repo(f"{s[0]}/{s[1][:-4]}", kind)
            return self.lfs_batch()
        if s[:1] == ["lfs-upload"] and len(s) == 2 and method == "PUT":
            return self.lfs_put(s[1])
        if s == ["lfs-verify"] and method == "POST":
            return self.lfs_verify()
        raise HubError(404, f"No route for {method} {self.path}")

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _api(self, repo: Repo, method: str, action: str | None, rest: list[str]):
        if method == "GET" and action is None:
            return self.repo_info(repo, self._revision(repo, "main"))
        if method == "GET" and action == "revision" and len(rest) == 1:
            return self.repo_info(repo, self._revision(repo, rest[0]))
        if method == "GET" and action == "tree" and rest:
            return self.tree(repo, self._revision(repo, rest[0]), "/".join(rest[1:]).strip("/"))
        if method == "POST" and action == "paths-info" and len(rest) == 1:
            return self.paths_info(repo, self._revision(repo, rest[0]))
        if method == "GET" and action == "commits" and len(rest) == 1:
            commit = self._revision(repo, rest[0])
            return self._json([self._commit_json(c) for c in repo.history(commit)])
        if method == "GET" and action == "refs":
            return self.refs(repo)
        if method == "POST" and action == "preupload" and len(rest) == 1:
            return self.preupload(repo, rest[0])
        if method == "POST" and action == "commit" and len(rest) == 1:
            return self.commit(repo, rest[0])
        if action == "branch" and len(rest) == 1 and method in ("POST", "DELETE"):
            return self.branch(repo, rest[0], method)
        if action == "tag" and len(rest) == 1 and method in ("POST", "DELETE"):
            return self.tag(repo, rest[0], method)
        raise HubError(404, f"No route for {method} {self.path}")

    # -- endpoints -----------------------------------------------------------------------------------------------

    def whoami(self):
        self._authorized(True)
        self._json({"type": "user", "id": "0" * 24, "name": USER, "fullname": "Test User", "email": None,
                    "emailVerified": True, "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
                    "orgs": [], "auth": {"type": "access_token",
                                         "accessToken": {"displayName": "tests", "role": "write", "createdAt": now()}}})

    def validate_yaml(self):
        """Model cards: only the front matter's delimiters are checked (no YAML parser in the standard library)."""
        lines = json.loads(self.body)["content"].splitlines()
        if lines[:1] == ["---"] and "---" not in lines[1:]:
            return self._json({"errors": [{"message": "unterminated YAML front matter"}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def _repo_payload(self) -> tuple[str, str]:
        payload = json.loads(self.body or b"{}")
        namespace = payload.get("organization") or USER
        return f"{namespace}/{payload['name']}", payload.get("type") or "model"

    def create_repo(self):
        repo_id, repo_type = self._repo_payload()
        url = f"{self.hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
        try:
            self.hub.create_repo(repo_id, repo_type)
        except HubError as err:
            return self._json({"error": err.message, "url": url}, err.status)
        self._json({"url": url, "name": repo_id, "id": "0" * 24})

    def delete_repo(self):
        repo_id, repo_type = self._repo_payload()
        with self.hub.lock:
            self.hub.repo(repo_id, repo_type)
            del self.hub.repos[(repo_type, repo_id)]
        self._json({})

    def repo_info(self, repo: Repo, commit: Commit):
        blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=len(blob.data), blobId=blob.oid)
                if blob.lfs:
                    sibling["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        self._json({"_id": "0" * 24, "id": repo.id, "author": repo.id.split("/")[0], "sha": commit.id,
                    "lastModified": commit.date, "createdAt": repo.created, "private": False, "gated": False,
                    "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings})

    def _entry(self, repo: Repo, commit: Commit, path: str) -> dict | None:
        last = repo.last_commit(commit, path)
        last = {"id": last.id, "title": last.title, "date": last.date}
        blob = commit.files.get(path)
        if blob is not None:
            entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path, "lastCommit": last}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            return entry
        inside = sorted((p, b.oid) for p, b in commit.files.items() if p.startswith(path + "/"))
        if not inside:
            return None
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(), "path": path,
                "lastCommit": last}

    def tree(self, repo: Repo, commit: Commit, path: str):
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        prefix = path + "/" if path else ""
        if path and path not in commit.files and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f'Entry "{path}" does not exist at revision "{commit.id}"', "EntryNotFound")
        if path in commit.files:
            raise HubError(404, f'"{path}" is a file, not a folder', "EntryNotFound")
        children = set()
        for file in commit.files:
            if file.startswith(prefix):
                parts = file[len(prefix):].split("/")
                depth = len(parts) if recursive else 1
                children.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
        entries = [self._entry(repo, commit, p) for p in sorted(children)]
        self._json(sorted(entries, key=lambda e: (e["type"] != "directory", e["path"])))

    def paths_info(self, repo: Repo, commit: Commit):
        form = urllib.parse.parse_qs(self.body.decode())
        entries = [self._entry(repo, commit, p.strip("/")) for p in form.get("paths", [])]
        self._json([e for e in entries if e is not None])

    def _commit_json(self, commit: Commit) -> dict:
        return {"id": commit.id, "title": commit.title, "message": commit.message, "date": commit.date,
                "authors": [{"user": USER, "avatar": ""}], "parents": [commit.parent] if commit.parent else []}

    def refs(self, repo: Repo):
        def refs(names: dict, kind: str) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in sorted(names.items())]

        self._json({"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"), "converts": [],
                    "pullRequests": []})

    def preupload(self, repo: Repo, revision: str):
        if "create_pr" in self.query:
            raise HubError(400, "Pull requests are not supported by the test Hub")
        head = self._revision(repo, revision)
        out = []
        for file in json.loads(self.body)["files"]:
            mode = self.hub.upload_mode(file["path"], file["size"], base64.b64decode(file["sample"]))
            existing = head.files.get(file["path"])
            oid = (existing.sha256 if existing.lfs else existing.oid) if existing else None
            out.append({"path": file["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": head.id})

    def commit(self, repo: Repo, branch: str):
        if "create_pr" in self.query:
            raise HubError(400, "Pull requests are not supported by the test Hub")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            raise HubError(400, "The commit has no header line")
        add, delete = {}, []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value['encoding']}")
                add[value["path"]] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                add[value["path"]] = Blob(data, True)
            elif key in ("deletedFile", "deletedFolder"):
                delete.append((value["path"], key == "deletedFolder"))
            elif key != "header":
                raise HubError(400, f"Unknown commit operation {key!r}")
        if branch not in repo.branches:
            raise HubError(404 if repo.resolve(branch) is None else 400,
                           f"Invalid rev id: {branch} is not a branch", "RevisionNotFound")
        commit = self.hub.commit(repo, branch, add, delete, header.get("summary", ""), header.get("description", ""),
                                 header.get("parentCommit"))
        self._json({"success": True, "commitOid": commit.id, "commitMessage": commit.title, "hookOutput": "",
                    "commitUrl": f"{self.hub.url}/{URL_PREFIX[repo.type]}{repo.id}/commit/{commit.id}",
                    "pullRequestUrl": None})

    def branch(self, repo: Repo, name: str, method: str):
        if method == "DELETE":
            if name not in repo.branches or name == "main":
                raise HubError(404 if name != "main" else 403, f"Cannot delete branch {name}", "RevisionNotFound")
            del repo.branches[name]
            return self._json({})
        if name in repo.branches:
            raise HubError(409, f"Reference refs/heads/{name} already exists")
        start = json.loads(self.body or b"{}").get("startingPoint") or "main"
        repo.branches[name] = self._revision(repo, start).id
        self._json({})

    def tag(self, repo: Repo, revision: str, method: str):
        if method == "DELETE":  # DELETE .../tag/{tag}
            if repo.tags.pop(revision, None) is None:
                raise HubError(404, f"Tag {revision} not found", "RevisionNotFound")
            return self._json({})
        name = json.loads(self.body)["tag"]
        if name in repo.tags:
            raise HubError(409, f"Tag {name} already exists")
        repo.tags[name] = self._revision(repo, revision).id
        self._json({})

    def resolve(self, repo: Repo, commit: Commit, path: str):
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path} at {commit.id}", "EntryNotFound")
        data, size = blob.data, len(blob.data)
        headers = {"X-Repo-Commit": commit.id, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.etag}"', "X-Linked-Size": str(size)})
        status, wanted = 200, self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if not match or match.groups() == ("", ""):
                raise HubError(400, f"Unsupported Range {wanted}")
            first, last = match.groups()
            if first == "":
                start, end = max(0, size - int(last)), size - 1
            else:
                start, end = int(first), min(size - 1, int(last)) if last else size - 1
            if start >= size or start > end:
                headers["Content-Range"] = f"bytes */{size}"
                return self._send(416, b"", headers, "text/plain")
            status, data = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, data, headers, "application/octet-stream")

    def lfs_batch(self):
        payload = json.loads(self.body)
        if payload.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are served; downloads go through /resolve")
        objects = []
        for obj in payload["objects"]:
            out = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:
                out["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}?sig={self.hub.upload_secret}",
                               "header": {}},
                    "verify": {"href": f"{self.hub.url}/lfs-verify", "header": {}},
                }
            objects.append(out)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def lfs_put(self, oid: str):
        if self.query.get("sig") != [self.hub.upload_secret]:  # a pre-signed URL, like the Hub's S3 ones
            raise HubError(403, "Bad upload signature")
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded bytes do not hash to {oid}")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = self.body
        self._send(200)

    def lfs_verify(self):
        self._authorized(True)
        payload = json.loads(self.body)
        data = self.hub.lfs_objects.get(payload["oid"])
        if data is None or len(data) != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} not found")
        self._json({"success": True})


__all__ = ["TOKEN", "USER", "Blob", "HubError", "HubServer"]
