//! `History` written as CSV and drawn as a PNG (the examples' `--plot`).

use nn::prelude::*;

fn history(metrics: &[Metric], validation: bool) -> History {
    let x = Tensor::from_vec(
        (0..120).map(|i| ((i * 7) % 11) as f32 / 11.0).collect(),
        &[40, 3],
    )
    .unwrap();
    let y = Tensor::from_vec((0..40).map(|i| (i % 2) as f32).collect(), &[40]).unwrap();
    let mut m = Sequential::new()
        .input_shape(&[3])
        .seed(1)
        .add(Dense::new(8, Act::Relu))
        .add(Dense::new(2, Act::Softmax));
    m.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        metrics,
    )
    .unwrap();
    let split = if validation { 0.25 } else { 0.0 };
    m.fit(
        &x,
        &y,
        &FitConfig::new()
            .epochs(4)
            .batch_size(8)
            .validation_split(split)
            .verbose(0),
        &mut [],
    )
    .unwrap()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nn-curves-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The width and height in a PNG's header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn csv_has_one_row_per_epoch_and_only_what_was_measured() {
    let h = history(&[Metric::Accuracy], true);
    let csv = h.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss"
    );
    assert_eq!(lines.len(), 5);
    let e = &h.epochs[3];
    assert_eq!(
        lines[4],
        format!(
            "3,{},{},{},{},{}",
            e.accuracy.unwrap(),
            e.learning_rate,
            e.loss,
            e.val_accuracy.unwrap(),
            e.val_loss.unwrap()
        )
    );
    let plain = history(&[], false).to_csv();
    assert!(
        plain.starts_with("epoch,learning_rate,loss\n0,0.001,"),
        "{plain}"
    );
    let dir = tmp("csv");
    h.write_csv(dir.join("h.csv")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("h.csv")).unwrap(), csv);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_draws_a_png_with_and_without_accuracy() {
    let dir = tmp("png");
    for (metrics, validation, name) in [
        (&[Metric::Accuracy][..], true, "both.png"),
        (&[][..], false, "loss.png"),
    ] {
        let path = dir.join(name);
        history(metrics, validation).plot(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), (1000, 420));
        assert!(
            bytes.len() > 5_000,
            "a chart, not a blank image: {} bytes",
            bytes.len()
        );
    }
    let err = History::default().plot(dir.join("empty.png")).unwrap_err();
    assert!(matches!(err, nn::Error::Plot { .. }), "{err}");
    assert!(!dir.join("empty.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
