//! The external golden problems (PyTorch float64 autograd through the literal recurrence,
//! `tests/data/golden/`): our float64 reference reproduces every result they hold.

use ssd_reference::{ssd_chunked, ssd_quadratic, ssd_recurrent};
use ssd_tests::data_path;
use ssd_verify::problem_file::ProblemFile;
use ssd_verify::tolerance::{rel_l2, GOLDEN_F64};

const FILES: [&str; 4] = [
    "pub_plain.npz",
    "pub_gated_groups.npz",
    "pub_seq_idx.npz",
    "pub_limits.npz",
];

fn load(name: &str) -> ProblemFile {
    ProblemFile::read(&data_path(&format!("golden/{name}"))).unwrap()
}

#[test]
fn golden_forward_every_form() {
    for name in FILES {
        let f = load(name);
        let p = &f.problem;
        for (form, o) in [
            ("recurrent", ssd_recurrent(&p.inputs(), &p.options).unwrap()),
            ("quadratic", ssd_quadratic(&p.inputs(), &p.options).unwrap()),
            ("chunked", ssd_chunked(&p.inputs(), &p.options).unwrap()),
        ] {
            for (key, got) in [
                ("out", o.out.into_dyn()),
                ("final_states", o.final_states.into_dyn()),
            ] {
                let want = &f.results[key];
                let e = rel_l2(&got, want);
                assert!(e <= GOLDEN_F64, "{name} {form} {key}: rel_l2 {e:e}");
            }
        }
    }
}
