"""One Dockerfile instruction at a time: what each does to the image, and the cache around it.

Each step (after FROM) is:  key = cache.cache_key(parent config digest, text, content hash)
  hit   the entry's config and layers become the image: ` ---> Using cache`, nothing runs
  miss  the instruction runs (a container, a copy, or a config change), the result is stored and
        put in the cache
then ` ---> <id>`: the first 12 hex digits of the new config's digest, which Docker calls the image ID.

The texts keyed on are Docker's classic `created_by` strings, which also go into the history:
  RUN        `/bin/sh -c CMD` (with build args in scope: `|2 A=1 B=2 /bin/sh -c CMD`)
  COPY/ADD   `/bin/sh -c #(nop) COPY --chown=.. SRC... in DEST` (+ the content hash in the key)
  others     `/bin/sh -c #(nop)  ENV K=V`, and so on
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from labctl import state
from labctl.build import cache as buildcache, dockerfile, files, runstep
from labctl.build.image import Image, Step, base_image, lower_dirs, store_layer
from labctl.build.context import Context, content_hash
from labctl.errors import LabError


class Builder:
    def __init__(self, store, ctx: Context, build_args: dict[str, str], no_cache: bool,
                 progress: Callable[[str], None], epoch: int, network: str, total: int):
        self.store, self.ctx, self.build_args, self.no_cache = store, ctx, build_args, no_cache
        self.progress, self.epoch, self.network, self.total = progress, epoch, network, total
        self.cache = buildcache.BuildCache(store)
        self.image: Image | None = None
        self.meta_args: dict[str, str] = {}   # ARG before FROM: for FROM only
        self.args: dict[str, str] = {}        # ARG after FROM: in scope for the rest
        self.used_args: set[str] = set()
        self.steps: list[Step] = []
        self.cmd_set = False

    def env(self) -> dict[str, str]:
        """What $VAR substitution sees: ARG values, overridden by ENV (Docker's precedence)."""
        return {**self.args, **self.image.env()} if self.image else dict(self.meta_args)

    def step(self, number: int, inst: dockerfile.Instruction) -> None:
        self.progress(f"Step {number}/{self.total} : {inst.text}")
        record = Step(number, inst.text)
        started = time.monotonic()
        if inst.keyword == "FROM":
            self._from(inst)
        elif inst.keyword == "ARG" and self.image is None:
            self._arg(inst, self.meta_args)
        else:
            self._cached_step(inst, record)
        record.seconds = time.monotonic() - started
        self.steps.append(record)
        if self.image is not None:
            self.progress(f" ---> {self.image.digest[7:19]}")

    def finish(self) -> None:
        unused = sorted(set(self.build_args) - self.used_args)
        if unused:
            self.progress(f"[Warning] One or more build-args {unused} were not consumed")
        self.progress(f"Successfully built {self.image.digest[7:19]}")

    # -- FROM and ARG ------------------------------------------------------------------------
    def _from(self, inst: dockerfile.Instruction) -> None:
        name, *rest = dockerfile.words(inst.args, self.meta_args)
        if rest:
            raise inst.error(f"FROM {inst.args}: `AS NAME` and other words after the image are not supported",
                             "multi-stage builds are not supported by the lab: write FROM IMAGE")
        try:
            self.image = base_image(self.store, name, self.progress)
        except LabError as exc:
            raise inst.error(f"FROM {name}: {exc.cause}", exc.fix) from None

    def _arg(self, inst: dockerfile.Instruction, into: dict[str, str]) -> list[tuple[str, str]]:
        pairs = []
        for word in dockerfile.words(inst.args, self.env()):
            name, eq, default = word.partition("=")
            if name in self.build_args:
                self.used_args.add(name)
                into[name] = self.build_args[name]
            elif eq:
                into[name] = default
            elif name in self.meta_args and into is self.args:   # `ARG V` after FROM takes the meta ARG's value
                into[name] = self.meta_args[name]
            pairs.append((name, into.get(name)))
        return pairs

    # -- the cache around each step ----------------------------------------------------------
    def _cached_step(self, inst: dockerfile.Instruction, record: Step) -> None:
        text, content, run = self._prepare(inst)
        key = buildcache.cache_key(self.image.digest, text, content)
        entry = None if self.no_cache else self.cache.get(key)
        if entry is not None:
            self.image = Image(entry.config, entry.layers)
            record.cached, record.layer = True, (entry.layer or {}).get("digest")
            self.progress(" ---> Using cache")
            return
        layer = run(text)
        record.layer = layer["digest"] if layer else None
        self.cache.put(key, buildcache.Entry(self.image.raw, self.image.layers, layer))

    def _prepare(self, inst: dockerfile.Instruction):
        """(the created_by text, the content hash, the function that makes the step's result)."""
        where = f"{inst.path}:{inst.line}"
        kw = inst.keyword
        if kw == "RUN":
            argv = inst.command()
            scope = {k: v for k, v in self.args.items() if v is not None}
            self.used_args.update(scope)
            prefix = f"|{len(scope)} " + " ".join(f"{k}={v}" for k, v in sorted(scope.items())) + " " if scope else ""
            shown = " ".join(argv) if inst.exec_form() is None else json.dumps(argv)
            return prefix + shown, "", lambda text: self._run(argv, scope, where, inst.args, text)
        if kw in ("COPY", "ADD"):
            return self._prepare_copy(inst, where)
        if kw == "WORKDIR":
            workdir = self._workdir_path(inst)
            return f"/bin/sh -c #(nop) WORKDIR {workdir}", "", lambda text: self._workdir(workdir, text)
        if kw == "ARG":   # in scope from here on, on a cache hit too
            pairs = self._arg(inst, self.args)
            shown = "ARG " + " ".join(k if v is None else f"{k}={v}" for k, v in pairs)
            return f"/bin/sh -c #(nop)  {shown}", "", lambda text: self.image.commit(text, self.epoch)
        if kw == "CMD":
            self.cmd_set = True
        shown = self._config_only(inst, dry_run=True)
        return f"/bin/sh -c #(nop)  {shown}", "", lambda text: self._config_change(inst, text)

    # -- RUN ---------------------------------------------------------------------------------
    def _run(self, argv: list[str], scope: dict, where: str, shown: str, text: str) -> dict:
        digest = self.image.store(self.store)   # the container's image: the image so far
        lowers = lower_dirs(self.store, self.image)
        req = runstep.RunRequest(digest, self.image.run_config, argv, scope, self.network)
        blob = runstep.run(req, lowers, self.progress, where, shown,
                           lambda upper, skip: store_layer(self.store, upper, self.epoch, skip))
        self.image.commit(text, self.epoch, blob.descriptor, blob.diff_id)
        return blob.descriptor

    # -- COPY, ADD, WORKDIR: layers without a container -------------------------------------
    def _prepare_copy(self, inst: dockerfile.Instruction, where: str):
        parts = dockerfile.words(inst.args, self.env()) if inst.exec_form() is None else inst.exec_form()
        if len(parts) < 2:
            raise inst.error(f"{inst.keyword} needs a source and a destination", f"write {inst.keyword} SRC... DEST")
        *patterns, dest = parts
        for pattern in patterns:
            if "://" in pattern:
                raise inst.error(f"ADD {pattern}: URLs are not supported by the lab's builder (no network)",
                                 "download the file into the context first, then COPY it")
        sources = [s for p in patterns for s in self.ctx.sources(p, where)]
        content = content_hash(self.ctx, sources, self.epoch)
        chown = f"--chown={inst.flags['chown']} " if "chown" in inst.flags else ""
        text = f"/bin/sh -c #(nop) {inst.keyword} {chown}{' '.join(patterns)} in {dest}"
        return text, content, lambda text: self._copy(inst, sources, dest, where, text)

    def _fresh_layer(self, fill: Callable[[Path, list[Path]], bool], text: str) -> dict | None:
        """A new upper directory filled by `fill(upper, lowers)`, made a layer (None: fill made nothing)."""
        lowers = lower_dirs(self.store, self.image)
        work = state.new_tmpdir("build-")
        try:
            upper = work / "upper"
            upper.mkdir(mode=0o755)
            if not fill(upper, lowers):
                self.image.commit(text, self.epoch)
                return None
            blob = store_layer(self.store, upper, self.epoch)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.image.commit(text, self.epoch, blob.descriptor, blob.diff_id)
        return blob.descriptor

    def _copy(self, inst, sources, dest: str, where: str, text: str) -> dict | None:
        def fill(upper: Path, lowers: list[Path]) -> bool:
            owner = files.parse_chown(inst.flags.get("chown"), lowers, where)
            try:
                files.copy_sources(self.ctx, sources, dest, self.image.run_config.get("WorkingDir") or "/",
                                   upper, lowers, owner, inst.keyword == "ADD", where)
            except LabError as exc:   # (a refused link, a rejected tar entry): one line, naming the line
                if exc.cause.startswith(where):
                    raise
                raise LabError(f"{where}: {exc.cause}", exc.fix) from None
            return True
        return self._fresh_layer(fill, text)

    def _workdir_path(self, inst: dockerfile.Instruction) -> str:
        import posixpath
        path = dockerfile.substitute(inst.args, self.env())
        return posixpath.normpath(posixpath.join(self.image.run_config.get("WorkingDir") or "/", path))

    def _workdir(self, workdir: str, text: str) -> dict | None:
        self.image.run_config["WorkingDir"] = workdir
        return self._fresh_layer(lambda upper, lowers: files.make_workdir(upper, workdir, lowers), text)

    # -- config-only instructions ------------------------------------------------------------
    def _config_change(self, inst: dockerfile.Instruction, text: str) -> None:
        self._config_only(inst, dry_run=False)
        self.image.commit(text, self.epoch)
        return None

    def _config_only(self, inst: dockerfile.Instruction, dry_run: bool) -> str:
        """Apply ENV, USER, CMD, ENTRYPOINT, EXPOSE, LABEL or VOLUME to the config (unless
        dry_run); returns the instruction's text as the history shows it (after substitution)."""
        cfg = {} if dry_run else self.image.run_config
        kw, env = inst.keyword, self.env()
        if kw == "ENV":
            pairs = dockerfile.key_values(inst, env)
            if not dry_run:
                current = self.image.env()
                current.update(pairs)
                cfg["Env"] = [f"{k}={v}" for k, v in current.items()]
            return "ENV " + " ".join(f"{k}={v}" for k, v in pairs)
        if kw == "LABEL":
            pairs = dockerfile.key_values(inst, env, legacy=False)
            cfg.setdefault("Labels", {}).update(pairs) if not dry_run else None
            return "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
        return self._config_rest(inst, cfg, env, dry_run)

    def _config_rest(self, inst, cfg: dict, env: dict, dry_run: bool) -> str:
        kw = inst.keyword
        if kw == "USER":
            cfg["User"] = user = dockerfile.substitute(inst.args, env)
            return f"USER {user}"
        if kw in ("CMD", "ENTRYPOINT"):
            argv = inst.command()
            cfg[kw.capitalize() if kw == "CMD" else "Entrypoint"] = argv
            if kw == "ENTRYPOINT" and not self.cmd_set:
                cfg["Cmd"] = None   # a new entrypoint drops the base image's CMD, as Docker does
            return f"{kw} {json.dumps(argv)}"
        values = inst.exec_form() if kw == "VOLUME" and inst.exec_form() is not None else dockerfile.words(inst.args, env)
        if kw == "EXPOSE":
            ports = [v if "/" in v else f"{v}/tcp" for v in values]
            cfg.setdefault("ExposedPorts", {}).update({p: {} for p in ports})
            return "EXPOSE " + " ".join(ports)
        cfg.setdefault("Volumes", {}).update({v: {} for v in values})   # VOLUME
        return f"VOLUME {json.dumps(values)}"
