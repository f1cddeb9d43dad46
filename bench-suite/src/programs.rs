//! The seven reference programs the report trains: each one's letter, the example of nn that
//! implements it, its data sets and epochs — what ours and every peer run.

/// One reference program: its letter (as in `shared/reference`), the example that implements
/// it, the data sets it runs on, and the targets.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub id: &'static str,
    pub example: &'static str,
    pub description: &'static str,
    pub datasets: &'static [&'static str],
    /// Its epochs (every framework's, unless the report is asked for fewer).
    pub epochs: usize,
}

pub const PROGRAMS: [Program; 7] = [
    Program {
        id: "A",
        example: "mlp_adam",
        description: "Flatten → Dense(128, relu) → Dense(10, softmax); adam; 10 epochs, batch 32",
        datasets: &["mnist", "fashion"],
        epochs: 10,
    },
    Program {
        id: "B",
        example: "mlp_rmsprop",
        description: "Dense(512, relu) → Dense(10, softmax); rmsprop; 5 epochs, batch 128",
        datasets: &["mnist", "fashion"],
        epochs: 5,
    },
    Program {
        id: "C",
        example: "cnn_sparse",
        description:
            "Conv2D(32, 3×3) → MaxPool(2×2) → Dense(128) → Dense(10); adam; sparse CE; 5 epochs",
        datasets: &["mnist", "fashion"],
        epochs: 5,
    },
    Program {
        id: "D",
        example: "cnn_onehot",
        description: "the CNN of C with one-hot labels, categorical CE; 5 epochs",
        datasets: &["mnist", "fashion"],
        epochs: 5,
    },
    Program {
        id: "E",
        example: "synthetic",
        description:
            "Dense(64, relu) on 100 features → Dense(10, softmax); adam; 10 epochs, synthetic",
        datasets: &["synthetic"],
        epochs: 10,
    },
    Program {
        id: "F",
        example: "cnn_bn",
        description: "Conv2D(16) → BatchNorm → ReLU → MaxPool → Conv2D(32) → BatchNorm → ReLU → \
                      MaxPool → Dense(10); adam, cosine decay to 0; sparse CE; 5 epochs, batch 64",
        datasets: &["fashion"],
        epochs: 5,
    },
    Program {
        id: "G",
        example: "cnn_stacked",
        description:
            "Conv2D(16, same, relu) → AvgPool → Conv2D(32, same, tanh) → Conv2D(32, tanh) \
                      → GlobalMaxPool → Dense(10); SGD, Nesterov 0.9; sparse CE; 3 epochs, \
                      batch 128",
        datasets: &["fashion"],
        epochs: 3,
    },
];
