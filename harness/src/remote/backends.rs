//! `kiln backends --on DEST`: mirror the workspace on DEST, build the
//! backends' modules there with its toolchain and probe them, print what
//! that machine can run (or why not) and what was sent.

use std::path::Path;

use kiln_stats::bytes;

use super::session::Session;
use super::ssh::SshTarget;

/// Runs it; an error when a named backend cannot run there (as locally).
pub fn main(target: &SshTarget, root: &Path, names: &[String]) -> Result<(), String> {
    let mut session = Session::connect(target, root)?;
    let report = session.sync(root)?;
    eprintln!(
        "kiln: mirrored {} files ({}) to {}:{}: sent {} file(s), {} of contents, {} in all",
        report.files,
        bytes::human(report.total_bytes),
        target.destination,
        session.mirror,
        report.sent_paths.len(),
        bytes::human(report.sent_bytes),
        bytes::human(session.wire_bytes()),
    );
    println!("on {}:", target.destination);
    let code = session.backends(names, |stream, line| {
        if stream == "stdout" {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    })?;
    session.close();
    match code {
        0 => Ok(()),
        code => Err(format!(
            "`kiln backends` on {} exited with code {code}",
            target.destination
        )),
    }
}
