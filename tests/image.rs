//! The image: the Dockerfile's build stage runs (no container engine needed) and its final stage
//! is distroless and non-root. Exactly the files its COPY lines copy (minus `.dockerignore`) go
//! into a scratch directory, its RUN steps run there in order, with a `cargo` that turns
//! `cargo build --release` into `cargo check` and shares this project's target directory, so a
//! missing COPY or stub fails here cheaply, not as a second cold release build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One instruction of a Dockerfile: keyword (upper case) and its arguments, continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's stages, each a list of instructions (the first is its `FROM`).
fn stages() -> Vec<Vec<Instruction>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending.split_once(char::is_whitespace).unwrap_or((&pending, ""));
        let instruction = Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_owned() };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("a Dockerfile starts with FROM").push(instruction);
        pending.clear();
    }
    stages
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory this test was built in (`<target>/debug/deps/image-<hash>`), shared so
/// the dependencies' check artifacts are reused.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors().nth(3).expect("<target>/<profile>/deps/<exe>").to_path_buf()
}

/// `.dockerignore` entries (top-level names; that is all the file uses).
fn ignored() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).unwrap_or_default();
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

fn copy_into(from: &Path, to: &Path, ignored: &[String]) {
    let relative = from.strip_prefix(repo()).expect("inside the build context");
    if relative.components().next().is_some_and(|c| ignored.iter().any(|i| c.as_os_str() == i.as_str())) {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            copy_into(&entry.path(), &to.join(entry.file_name()), ignored);
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A `cargo` that runs the real one as `cargo check` (no `--release`), in the shared target dir.
fn cargo_shim(dir: &Path) -> PathBuf {
    let bin = dir.join("shim");
    std::fs::create_dir_all(&bin).expect("mkdir shim");
    let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let script = format!(
        "#!/bin/sh\n# cargo build --release ... -> cargo check ...\nfor a in \"$@\"; do\n  case \"$a\" in\n    build) set -- \"$@\" check ;;\n    --release) ;;\n    *) set -- \"$@\" \"$a\" ;;\n  esac\n  shift\ndone\necho \"cargo $*\" >&2\nCARGO_TARGET_DIR='{}' exec '{real}' \"$@\"\n",
        target_dir().display()
    );
    let path = bin.join("cargo");
    std::fs::write(&path, script).expect("write shim");
    let status = Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
    assert!(status.success());
    bin
}

#[test]
fn dockerfile_build_stage_runs_on_exactly_the_files_it_copies() {
    let stages = stages();
    let build = &stages[0];
    let context = repo().join("target/dockerfile-context");
    let _ = std::fs::remove_dir_all(&context);
    let workdir = context.join("src-root");
    std::fs::create_dir_all(&workdir).expect("mkdir");
    let shim = cargo_shim(&context);
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default());
    let ignored = ignored();
    let mut ran_cargo = 0;
    for instruction in &build[1..] {
        match instruction.keyword.as_str() {
            "WORKDIR" => assert_eq!(instruction.args, "/src", "the build stage works in /src"),
            "COPY" => {
                let parts: Vec<&str> = instruction.args.split_whitespace().collect();
                assert!(!parts.iter().any(|p| p.starts_with("--")), "COPY flags in the build stage: {parts:?}");
                let (dest, sources) = parts.split_last().expect("COPY SRC... DEST");
                assert!(!dest.starts_with('/'), "COPY into the WORKDIR, relatively: {dest}");
                for source in sources {
                    let from = repo().join(source);
                    assert!(from.exists(), "COPY {source}: not in the build context");
                    let to = if dest.ends_with('/') || sources.len() > 1 {
                        workdir.join(dest).join(from.file_name().expect("name"))
                    } else {
                        workdir.join(dest)
                    };
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).expect("mkdir");
                    }
                    copy_into(&from, &to, &ignored);
                }
            }
            "RUN" => {
                ran_cargo += instruction.args.matches("cargo build").count();
                let out = Command::new("sh")
                    .args(["-ec", &instruction.args])
                    .current_dir(&workdir)
                    .env("PATH", &path)
                    .output()
                    .expect("run sh");
                assert!(
                    out.status.success(),
                    "RUN {} failed in the copied build context:\n{}",
                    instruction.args,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            other => panic!("the build stage has an instruction this test does not model: {other}"),
        }
    }
    assert_eq!(ran_cargo, 2, "a dependencies-only build, then the build of the source");
}

#[test]
fn image_is_distroless_and_runs_as_non_root() {
    let stages = stages();
    let last = stages.last().expect("stages");
    let from = &last[0].args;
    assert!(from.starts_with("gcr.io/distroless/") && from.ends_with(":nonroot"), "final stage: FROM {from}");
    let user = last.iter().find(|i| i.keyword == "USER").map(|i| i.args.as_str());
    assert_eq!(
        user,
        Some("65532:65532"),
        "runs as the distroless nonroot uid, numerically (runAsNonRoot can check it)"
    );
    let copies: Vec<&str> = last.iter().filter(|i| i.keyword == "COPY").map(|i| i.args.as_str()).collect();
    assert_eq!(copies, ["--from=build /src/target/release/nsguard /usr/local/bin/nsguard"], "only the release binary");
    let build_runs: String = stages[0].iter().filter(|i| i.keyword == "RUN").map(|i| i.args.as_str()).collect();
    assert!(build_runs.contains("cargo build --release --locked --bin nsguard"), "a --locked release build");
}
