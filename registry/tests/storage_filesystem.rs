//! The filesystem backend against the shared storage driver suite.

use registry::storage::filesystem::FilesystemDriver;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filesystem_driver_passes_the_storage_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = FilesystemDriver::new(dir.path()).expect("driver");
    registry::storage::testsuite::run(driver).await;
}
