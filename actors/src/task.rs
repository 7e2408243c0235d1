//! Tasks owned by a value: a background task (a sweeper, a tracker, a controller) that must not
//! outlive what started it is held as an [`AbortOnDrop`].

/// Aborts its task when dropped — also when the owner is dropped on failure, unlike a
/// `post_stop` hook.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
