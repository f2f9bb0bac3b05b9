//! The spec-derived registry suite against rregistry and against CNCF distribution 2.8, whose
//! known deviations the suite states and expects from it only.

use conformance::peers::DockerRegistry;
use conformance::registry_suite::{run, run_delete_disabled, Flavor, Rregistry};

#[test]
fn rregistry_passes_the_spec_suite() {
    let registry = Rregistry::start(true, "").expect("start rregistry");
    run(&registry.url(), Flavor::Rregistry).assert_all_passed();
}

#[test]
fn rregistry_refuses_deletes_when_disabled() {
    let registry = Rregistry::start(false, "").expect("start rregistry");
    run_delete_disabled(&registry.url(), Flavor::Rregistry).assert_all_passed();
}

#[test]
fn distribution_passes_the_spec_suite_with_its_known_deviations() {
    let registry = DockerRegistry::start("").expect("start docker-registry");
    run(&format!("http://{}", registry.addr()), Flavor::Distribution).assert_all_passed();
}
