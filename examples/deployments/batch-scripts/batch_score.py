"""Batch scoring driver for the churn model: init() loads the model once per worker, run() scores
one mini batch of CSV files and returns one row per customer (appended to predictions.csv)."""
import glob
import os

import joblib
import pandas as pd

model = None


def init():
    global model
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    model = joblib.load(glob.glob(os.path.join(model_dir, "**", "*.pkl"), recursive=True)[0])


def run(mini_batch):
    data = pd.concat([pd.read_csv(path) for path in mini_batch], ignore_index=True)
    data["churn_probability"] = model.predict_proba(data.drop(columns=["customer_id"]))[:, 1]
    return data[["customer_id", "churn_probability"]]
