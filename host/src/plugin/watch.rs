//! Watching the plugin folder: which file-system events can change the plugins, so that a quiet
//! folder costs nothing and a rescan, which only reads the folder, never starts the next one.

use std::path::{Path, PathBuf};

use crate::Error;

/// Watch the plugin folder `dir`, calling `changed` for each event that can change its plugins.
/// `fulcrum check` makes one too: a folder that cannot be watched fails `run` at start.
pub fn watcher(dir: &Path, changed: impl Fn() + Send + 'static) -> Result<notify::RecommendedWatcher, Error> {
    use notify::Watcher as _;
    let folder = [dir.to_path_buf(), std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())];
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if changes_plugins(&event, &folder) => changed(),
        Ok(_) => {}
        // The watcher lost track (an overflow and the like): look again rather than miss a change.
        Err(_) => changed(),
    })
    .map_err(|e| Error::msg(format!("watching the plugin folder {}: {e}", dir.display())))?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::msg(format!("watching the plugin folder {}: {e}", dir.display())))?;
    Ok(watcher)
}

/// Watch one file (the configuration, for `run --watch-config`), calling `changed` when it may
/// have changed: written, replaced by a rename (as editors and deploy tools save), or created.
/// Its folder is watched, since a file replaced by a rename is a new file.
pub fn file_watcher(file: &Path, changed: impl Fn() + Send + 'static) -> Result<notify::RecommendedWatcher, Error> {
    use notify::Watcher as _;
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let folder = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let target = absolute.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if changes_file(&event, &target) => changed(),
        Ok(_) => {}
        Err(_) => changed(),
    })
    .map_err(|e| Error::msg(format!("watching {}: {e}", absolute.display())))?;
    watcher
        .watch(&folder, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::msg(format!("watching {} (for {}): {e}", folder.display(), absolute.display())))?;
    Ok(watcher)
}

/// Whether an event in a file's folder can have changed the file.
fn changes_file(event: &notify::Event, file: &Path) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    let may_change = match event.kind {
        EventKind::Create(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any | ModifyKind::Other) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Access(_) | EventKind::Other => {
            false
        }
    };
    may_change && (event.need_rescan() || event.paths.iter().any(|p| p == file))
}

/// Whether a plugin-folder event can change the set of plugins: a `*.wasm` file created, written,
/// closed after writing, renamed or removed, or the folder itself removed or renamed (`folder`:
/// its path as given and made absolute). Opening, reading and closing after reading cannot, nor
/// can a change of metadata, and they are all a rescan does in the folder.
pub fn changes_plugins(event: &notify::Event, folder: &[PathBuf]) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    if event.need_rescan() {
        return true;
    }
    let may_change = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any | ModifyKind::Other) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Access(_) | EventKind::Other => false,
    };
    let folder_itself = matches!(event.kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)));
    may_change
        && event
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "wasm") || (folder_itself && folder.iter().any(|f| f == p)))
}

#[cfg(test)]
mod tests {
    use notify::EventKind;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode,
    };

    use super::*;

    /// Event in, rescan or not out: what inotify reports for writing, renaming and removing a
    /// plugin counts; what a rescan's reading of the folder and its files reports does not.
    #[test]
    fn only_changes_to_wasm_files_or_the_folder_count() {
        let folder = [PathBuf::from("/p"), PathBuf::from("/p")];
        let cases: &[(EventKind, &str, bool)] = &[
            (EventKind::Create(CreateKind::File), "/p/a.wasm", true),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), "/p/a.wasm", true),
            (EventKind::Access(AccessKind::Close(AccessMode::Write)), "/p/a.wasm", true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/p/a.wasm", true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/p/a.wasm", true),
            (EventKind::Remove(RemoveKind::File), "/p/a.wasm", true),
            // The folder itself goes away or is renamed.
            (EventKind::Remove(RemoveKind::Folder), "/p", true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/p", true),
            // What a rescan does: open the folder, open, read and close the files.
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), "/p", false),
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), "/p/a.wasm", false),
            (EventKind::Access(AccessKind::Read), "/p/a.wasm", false),
            (EventKind::Access(AccessKind::Close(AccessMode::Read)), "/p/a.wasm", false),
            (EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)), "/p/a.wasm", false),
            // Files that are not plugins: a copy written aside, a README.
            (EventKind::Create(CreateKind::File), "/p/a.wasm.tmp", false),
            (EventKind::Access(AccessKind::Close(AccessMode::Write)), "/p/README", false),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), "/p", false),
        ];
        for (kind, path, expected) in cases {
            let event = notify::Event::new(*kind).add_path(PathBuf::from(path));
            assert_eq!(changes_plugins(&event, &folder), *expected, "{kind:?} {path}");
        }
        let renamed_in = notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/p/a.wasm.tmp"))
            .add_path(PathBuf::from("/p/a.wasm"));
        assert!(changes_plugins(&renamed_in, &folder));
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(changes_plugins(&overflow, &folder));
    }
}
