"""Checks that an OCI image archive (deploy/image/build.sh) and the runtime
stage of deploy/Dockerfile describe the same image: user and group (name and
id), working directory, its owner and mode, volume, ports, stop signal,
entrypoint, and the files the Dockerfile's packages provide (OpenSSL, zlib,
the CA bundle) and its preStop `sleep`.

  python3 deploy/image/compare-dockerfile.py OUT.tar [deploy/Dockerfile]

Standard library only. Prints one line per compared property; exits 1 on the
first list of differences.
"""

import io
import json
import re
import shlex
import sys
import tarfile
from pathlib import Path

failures = []


def same(what, dockerfile, image):
    if dockerfile == image:
        print(f"ok   {what}: {image!r} in both")
    else:
        failures.append(f"{what}: Dockerfile {dockerfile!r}, image {image!r}")
        print(f"FAIL {what}: Dockerfile {dockerfile!r}, image {image!r}")


def runtime_stage(text):
    """The instructions of the last stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [l.strip() for l in joined.splitlines() if l.strip() and not l.strip().startswith("#")]
    last_from = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    out = []
    for l in lines[last_from:]:
        word, _, rest = l.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def one(stage, word):
    vals = [rest for w, rest in stage if w == word]
    if len(vals) != 1:
        failures.append(f"the Dockerfile's runtime stage has {len(vals)} {word} instructions")
        return None
    return vals[0]


def flag(words, name):
    return words[words.index(name) + 1] if name in words else None


def dockerfile_facts(path):
    stage = runtime_stage(Path(path).read_text())
    f = {}
    f["workdir"] = one(stage, "WORKDIR")
    f["volumes"] = json.loads(one(stage, "VOLUME"))
    f["user"] = one(stage, "USER")
    f["ports"] = sorted(f"{p}/tcp" if "/" not in p else p for p in one(stage, "EXPOSE").split())
    f["stop_signal"] = one(stage, "STOPSIGNAL")
    f["entrypoint"] = json.loads(one(stage, "ENTRYPOINT"))
    runs = " && ".join(rest for w, rest in stage if w == "RUN")
    cmds = [shlex.split(c) for c in re.split(r"&&", runs)]
    for c in cmds:
        if c[:1] == ["groupadd"]:
            f["group"] = (c[-1], int(flag(c, "--gid")))
        if c[:1] == ["useradd"]:
            f["user_entry"] = (c[-1], int(flag(c, "--uid")), int(flag(c, "--gid")), flag(c, "--home-dir"), flag(c, "--shell"))
        if c[:2] == ["install", "-d"]:
            f["dir"] = (c[-1], int(flag(c, "-o")), int(flag(c, "-g")), flag(c, "-m"))
        if c[:3] == ["apt-get", "install", "-y"]:
            f["packages"] = sorted(w for w in c[3:] if not w.startswith("-"))
    copies = [rest.split() for w, rest in stage if w == "COPY"]
    f["binary"] = copies[0][-1] if copies else None
    return f


def image_facts(archive):
    f = {}
    with tarfile.open(archive) as oci:
        def blob(digest):
            return oci.extractfile("blobs/" + digest.replace(":", "/")).read()
        index = json.loads(oci.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))["config"]
        files = {}
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as t:
                for m in t.getmembers():
                    name = "/" + m.name.lstrip("./")
                    files[name.rstrip("/") or "/"] = m
                    if name in ("/etc/passwd", "/etc/group"):
                        f[name] = t.extractfile(m).read().decode()
                    if m.isfile() and m.mode & 0o111:
                        f.setdefault("interp", {})[name] = elf_interpreter(t.extractfile(m).read(4096))
    f["workdir"] = config.get("WorkingDir")
    f["volumes"] = sorted(config.get("Volumes") or {})
    f["user"] = config.get("User")
    f["ports"] = sorted(config.get("ExposedPorts") or {})
    f["stop_signal"] = config.get("StopSignal")
    f["entrypoint"] = config.get("Entrypoint")
    f["cmd"] = config.get("Cmd")
    f["files"] = files
    return f


def elf_interpreter(head):
    """PT_INTERP of a little-endian ELF64 file (from its first 4 KiB), or None."""
    import struct
    if head[:4] != b"\x7fELF" or head[4] != 2:
        return None
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", head, phoff + i * phentsize)
        if p_type == 3:
            return head[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    return None


def resolve(files, path):
    """Follows the image's symlinks (merged /usr) to a member name."""
    parts, seen = path.strip("/").split("/"), 0
    cur = ""
    while parts:
        cur = cur + "/" + parts.pop(0)
        m = files.get(cur)
        if m is not None and m.issym():
            seen += 1
            if seen > 20:
                return None
            target = m.linkname
            base = "" if target.startswith("/") else cur.rsplit("/", 1)[0]
            parts = (base + "/" + target).strip("/").split("/") + parts
            cur = ""
    return cur if cur in files else None


def main():
    archive = sys.argv[1]
    dockerfile = sys.argv[2] if len(sys.argv) > 2 else "deploy/Dockerfile"
    d, i = dockerfile_facts(dockerfile), image_facts(archive)
    if failures:
        sys.exit("\n".join("FAIL " + x for x in failures))
    same("USER", d["user"], i["user"])
    same("WORKDIR", d["workdir"], i["workdir"])
    same("VOLUME", d["volumes"], i["volumes"])
    same("EXPOSE", d["ports"], i["ports"])
    same("STOPSIGNAL", d["stop_signal"], i["stop_signal"])
    same("ENTRYPOINT", d["entrypoint"], i["entrypoint"])
    same("CMD (none)", None, i["cmd"])
    same("binary at the entrypoint", d["binary"], d["entrypoint"][0])
    files = i["files"]
    ep = resolve(files, d["entrypoint"][0])
    same("entrypoint is an executable file", True, bool(ep) and files[ep].isfile() and bool(files[ep].mode & 0o111))
    # Each program's loader is in the image (without it: "exec ...: no such file or directory").
    for prog in (d["entrypoint"][0], "/bin/sleep"):
        member = resolve(files, prog)
        interp = i.get("interp", {}).get("/" + member.lstrip("/")) if member else None
        same(f"{prog}: its ELF interpreter {interp} is in the image", True, bool(interp) and resolve(files, interp) is not None)
    name, gid = d["group"]
    groups = [l.split(":") for l in i.get("/etc/group", "").splitlines()]
    same("group (name:gid)", f"{name}:{gid}", next((f"{g[0]}:{g[2]}" for g in groups if g[0] == name), None))
    uname, uid, ugid, home, shell = d["user_entry"]
    same("passwd entry", f"{uname}:x:{uid}:{ugid}::{home}:{shell}",
         next((l for l in i.get("/etc/passwd", "").splitlines() if l.startswith(uname + ":")), None))
    same("USER is the useradd user", d["user"], f"{uid}:{ugid}")
    path, owner, group, mode = d["dir"]
    m = files.get(resolve(files, path) or "")
    same(f"{path} owner:group mode", f"{owner}:{group} {int(mode, 8):o}", m and f"{m.uid}:{m.gid} {m.mode & 0o7777:o}")
    same("WORKDIR is the install -d directory", d["workdir"], path)
    # What the runtime stage's packages are there for.
    provides = {"ca-certificates": "/etc/ssl/certs/ca-certificates.crt",
                "libssl3": "/lib/x86_64-linux-gnu/libssl.so.3",
                "zlib1g": "/lib/x86_64-linux-gnu/libz.so.1"}
    same("the runtime stage's packages", sorted(provides), d.get("packages"))
    for pkg, p in provides.items():
        same(f"{pkg}: {p}", True, resolve(files, p) is not None)
    # The chart's preStop hook runs `sleep`, which debian:bookworm-slim has.
    same("sleep for the chart's preStop hook (/bin/sleep)", True, resolve(files, "/bin/sleep") is not None)
    if failures:
        sys.exit(f"FAIL {len(failures)} differences between {dockerfile} and {archive}")
    print(f"ok   {archive} and {dockerfile} describe the same image")


if __name__ == "__main__":
    main()
