"""Mean top-1 confidence vs accuracy of each run's final model (flip TTA, as validated), and the bins."""
import torch
from ffmix.loader import make_loader
from ffmix.models import build_model
from ffmix.train.calibration import bin_table, ece_from_table
torch.set_num_threads(1)
for run in ("on", "off"):
    state = torch.load(f"runs/compare-calibration/mixing-{run}/last.pt", weights_only=False)["model"]
    model = build_model("cnn", 1, 10, 16); model.load_state_dict(state); model.eval()
    loader = make_loader("data/fmnist-test.beton", batch_size=500, order="sequential", targets="label",
                         drop_last=False, num_workers=1)
    table = torch.zeros(3, 15, dtype=torch.float64)
    with torch.no_grad():
        for images, labels in loader:
            logits = (model(images) + model(images.flip(3))) / 2
            table += bin_table(logits, labels)
    n = table[0].sum()
    print(run, "acc %.4f mean conf %.4f ECE %.4f" % (table[2].sum() / n, table[1].sum() / n, ece_from_table(table)))
    for k in range(15):
        if table[0, k]:
            print("  bin %2d n %5d conf %.3f acc %.3f" % (k, table[0, k], table[1, k] / table[0, k], table[2, k] / table[0, k]))
