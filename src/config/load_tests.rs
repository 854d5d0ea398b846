//! Tests of config loading and checks (`load.rs`).
use super::*;

fn load_str(text: &str, sets: &[&str]) -> Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(Some(&p), &sets)
}

/// The demo's synthetic sizes do not follow `--set data.dataset=…` to another dataset;
/// what the user sets alongside does.
#[test]
fn demo_data_sizes_stay_with_the_synthetic_task() {
    let c = Config::load(None, &["data.dataset=\"cifar10\"".into(), "data.root=\"/d\"".into()]).unwrap();
    assert_eq!((c.data.train_size, c.data.test_size, c.data.image_size), (Count::All, Count::None, 0));
    assert_eq!((c.data.num_classes, c.data.noise), (0, 3.0));
    let sets = ["data.dataset=\"cifar10\"", "data.root=\"/d\"", "data.train_size=1000", "data.test_size=\"all\""];
    let c = Config::load(None, &sets.map(String::from)).unwrap();
    assert_eq!((c.data.train_size, c.data.test_size), (Count::N(1000), Count::All));
    // The demo itself keeps them; a config file is never changed.
    let c = Config::load(None, &[]).unwrap();
    assert_eq!((c.data.train_size, c.data.test_size, c.data.image_size), (Count::N(4096), Count::N(1024), 16));
    let c = load_str("[data]\ndataset = \"cifar10\"\nroot = \"/d\"\nimage_size = 16\n", &[]).unwrap();
    assert_eq!(c.data.image_size, 16);
}

/// A run directory's config.toml from an earlier version (0 = all / none) still reads.
#[test]
fn stored_configs_of_earlier_versions_keep_their_counts() {
    let text = "[data]\ndataset = \"cifar10\"\nroot = \"/d\"\ntrain_size = 0\ntest_size = 0\n[run]\nworld_size = 1\n";
    let c = Config::from_toml_str(text).unwrap();
    assert_eq!((c.data.train_size, c.data.test_size), (Count::All, Count::None));
    let c = load_str(text, &[]).unwrap();
    assert_eq!((c.data.train_size, c.data.test_size), (Count::All, Count::None));
}

/// A count is a number, "all" or "none"; 0 is refused; the written form reads back.
#[test]
fn counts_are_numbers_all_or_none() {
    let c = load_str("[data]\ntest_size = \"all\"\ntrain_size = 256\n", &[]).unwrap();
    assert_eq!((c.data.train_size, c.data.test_size), (Count::N(256), Count::N(10_000)));
    let e = load_str("[data]\ntest_size = 0\n", &[]).unwrap_err().to_string();
    assert!(e.ends_with("data.test_size: 0 is ambiguous: write \"all\" or \"none\""), "{e}");
    let e = load_str("[data]\ntrain_size = \"none\"\n", &[]).unwrap_err().to_string();
    assert!(e.contains("data.train_size: must be a number or \"all\""), "{e}");
    let e = load_str("[data]\ntrain_size = \"most\"\n", &[]).unwrap_err().to_string();
    assert!(e.contains("expected a number, \"all\" or \"none\" (got \"most\")"), "{e}");
    let c = load_str("[data]\ndataset = \"cifar10\"\nroot = \"/d\"\ntest_size = \"none\"\n", &[]).unwrap();
    let back = Config::from_toml_str(&c.to_toml()).unwrap();
    assert_eq!((back.data.train_size, back.data.test_size), (Count::All, Count::None));
}

#[test]
fn demo_config_is_valid() {
    let c = Config::load(None, &[]).unwrap();
    assert_eq!(c.space.name, "nb201");
}

#[test]
fn track_n_needs_darts_im_and_positive_n() {
    let sets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ok = Config::load(None, &sets(&["select.criterion=\"darts-im\"", "select.track_n=[1, 10]"])).unwrap();
    assert_eq!(ok.select.track_n, vec![1, 10]);
    let e = Config::load(None, &sets(&["select.criterion=\"magnitude\"", "select.track_n=[1]"])).unwrap_err();
    assert!(e.to_string().contains("select.track_n") && e.to_string().contains("darts-im"), "{e}");
    let e = Config::load(None, &sets(&["select.criterion=\"darts-im\"", "select.track_n=[0]"])).unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
}

#[test]
fn unknown_key_is_named_with_its_section() {
    let e = load_str("[search.weights]\nlrr = 0.1\n", &[]).unwrap_err().to_string();
    assert!(e.contains("search.weights.lrr: unknown key"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = load_str("[search]\nepochs = \"ten\"\n", &[]).unwrap_err().to_string();
    assert!(e.contains("search.epochs"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn out_of_range_names_the_key_and_value() {
    let e = load_str("", &["search.weights.lr=-1"]).unwrap_err().to_string();
    assert!(e.contains("search.weights.lr: must be finite and > 0 (got -1)"), "{e}");
}

#[test]
fn override_from_set_is_blamed_on_set() {
    let e = load_str("", &["search.nope=1"]).unwrap_err().to_string();
    assert!(e.starts_with("--set search.nope=1: search.nope: unknown key"), "{e}");
}

#[test]
fn overrides_parse_toml_values() {
    let c = load_str("", &["search.epochs=3", "search.weights.nesterov=true", "search.order=weights-first"]).unwrap();
    assert_eq!(c.search.epochs, 3);
    assert!(c.search.weights.nesterov);
    assert_eq!(c.search.order, StepOrder::WeightsFirst);
}

#[test]
fn world_checks() {
    let c = load_str("[search]\nbatch_size = 32\nmicro_batch = 16\n", &[]).unwrap();
    assert!(c.check_world(2).is_ok());
    assert!(c.check_world(3).unwrap_err().to_string().contains("not divisible by the 3 ranks"));
    let e = c.check_world(4).unwrap_err().to_string();
    assert!(e.contains("search.micro_batch: 16 does not divide the per-rank shard of 8"), "{e}");
    assert!(c.check_world(64).unwrap_err().to_string().contains("64 ranks exceed the global batch of 32"));
}

#[test]
fn resolved_config_round_trips() {
    let c = Config::load(None, &["seed=7".to_string()]).unwrap();
    let back: Config = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(back, c);
}
