//! The external golden problems (PyTorch float64 autograd through the literal recurrence,
//! `tests/data/golden/`): our float64 reference reproduces every result they hold.

use ssd_reference::{
    mamba_chunk_scan_combined_bwd, ssd_chunked, ssd_quadratic, ssd_recurrent, ssd_recurrent_bwd,
};
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

/// The float64 backward, recurrent and chunked, reproduces every gradient the golden files hold.
#[test]
fn golden_backward_recurrent_and_chunked() {
    for name in FILES {
        let f = load(name);
        let p = &f.problem;
        let dout = f.dout.as_ref().expect("golden files hold dout");
        let dfinal = f.dfinal_states.as_ref().map(|v| v.view());
        let rec = ssd_recurrent_bwd(&p.inputs(), &p.options, dout.view(), dfinal).unwrap();
        let (ch, _) =
            mamba_chunk_scan_combined_bwd(&p.inputs(), &p.options, dout.view(), dfinal).unwrap();
        for (form, g) in [("recurrent", rec), ("chunked", ch)] {
            let mut present = vec![
                ("dx", g.dx.into_dyn()),
                ("ddt", g.ddt.into_dyn()),
                ("dA", g.da.into_dyn()),
                ("dB", g.db.into_dyn()),
                ("dC", g.dc.into_dyn()),
            ];
            present.extend(g.dd.map(|v| ("dD", v)));
            present.extend(g.dz.map(|v| ("dz", v.into_dyn())));
            present.extend(g.ddt_bias.map(|v| ("ddt_bias", v.into_dyn())));
            present.extend(g.dinitial_states.map(|v| ("dinitial_states", v.into_dyn())));
            // every gradient in the file is one we computed, and vice versa
            for key in [
                "dx",
                "ddt",
                "dA",
                "dB",
                "dC",
                "dD",
                "dz",
                "ddt_bias",
                "dinitial_states",
            ] {
                assert_eq!(
                    f.results.contains_key(key),
                    present.iter().any(|(k, _)| *k == key),
                    "{name} {form}: {key} present in the file vs computed"
                );
            }
            for (key, got) in present {
                let want = &f.results[key];
                let e = rel_l2(&got, want);
                println!("{name} {form} {key}: rel_l2 {e:.3e}");
                assert!(e <= GOLDEN_F64, "{name} {form} {key}: rel_l2 {e:e}");
            }
        }
    }
}
