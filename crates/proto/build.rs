//! Compiles every `.proto` under `proto/` with protox (no system `protoc`) and
//! writes the encoded descriptor set next to the generated code. The encoded
//! bytes keep the custom `csp.auth.v1` options, which the gateway reads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "src/bounds/spec.rs"]
#[allow(dead_code)]
mod spec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let root = root.canonicalize()?;
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;
    compiler.open_files(&relative)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("csp_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let set = compiler.file_descriptor_set();
    let messages = match spec::collect(&set) {
        Ok(messages) => messages,
        Err(problems) => {
            for problem in &problems {
                println!("cargo:warning={problem}");
            }
            return Err(format!(
                "{} request field(s) without a documented limit (see the warnings)",
                problems.len()
            )
            .into());
        }
    };
    std::fs::write(out_dir.join("bounds_table.rs"), table(&messages)?)?;

    // Messages know their names (`prost::Name`), so the codec can find the
    // limits of the request it decodes.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    // Uploaded attachments decode as slices of the received message, not
    // copies of it.
    config.bytes([
        ".csp.support.v1.AttachmentUpload.content",
        ".csp.support.v1.UploadAttachmentRequest.chunk",
    ]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .codec_path("crate::bounds::BoundedCodec")
        .compile_fds_with_config(set, config)?;
    Ok(())
}

/// The limits as Rust: one `Message` per reachable message, and the index
/// of each request by package and name.
fn table(messages: &[spec::MessageSpec]) -> Result<String, std::fmt::Error> {
    let index: std::collections::HashMap<String, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.full_name(), i))
        .collect();
    let mut out = String::new();
    writeln!(
        out,
        "/// Every message reachable from a request, with its checked fields."
    )?;
    writeln!(out, "pub(crate) static MESSAGES: &[Message] = &[")?;
    for message in messages {
        writeln!(out, "    // {}", message.full_name())?;
        writeln!(out, "    Message {{ fields: &[")?;
        for field in &message.fields {
            let rule = match &field.rule {
                spec::Rule::Text(max) => format!("Rule::Text({max})"),
                spec::Rule::Message(target) => format!("Rule::Message({})", index[target]),
            };
            writeln!(
                out,
                "        Field {{ number: {}, name: {:?}, repeated: {}, rule: {rule} }},",
                field.number, field.name, field.repeated
            )?;
        }
        writeln!(out, "    ] }},")?;
    }
    writeln!(out, "];")?;
    writeln!(out)?;
    writeln!(
        out,
        "/// The index in [`MESSAGES`] of a request message the codec checks."
    )?;
    writeln!(
        out,
        "pub(crate) fn request_index(package: &str, name: &str) -> Option<usize> {{"
    )?;
    writeln!(out, "    match (package, name) {{")?;
    for (i, message) in messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.request && !m.itemwise)
    {
        writeln!(
            out,
            "        ({:?}, {:?}) => Some({i}),",
            message.package, message.name
        )?;
    }
    writeln!(out, "        _ => None,")?;
    writeln!(out, "    }}")?;
    writeln!(out, "}}")?;
    writeln!(out)?;
    writeln!(
        out,
        "/// The index in [`MESSAGES`] of any top-level message reachable from a request."
    )?;
    writeln!(
        out,
        "pub(crate) fn message_index(package: &str, name: &str) -> Option<usize> {{"
    )?;
    writeln!(out, "    match (package, name) {{")?;
    for (i, message) in messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.name.contains('.'))
    {
        writeln!(
            out,
            "        ({:?}, {:?}) => Some({i}),",
            message.package, message.name
        )?;
    }
    writeln!(out, "        _ => None,")?;
    writeln!(out, "    }}")?;
    writeln!(out, "}}")?;
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
