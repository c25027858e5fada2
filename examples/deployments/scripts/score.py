"""Scoring script for the churn model: Azure ML calls init() once and run() per request."""
import json
import os

import joblib

model = None


def init():
    global model
    # AZUREML_MODEL_DIR is where the registered model version is mounted.
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    model = joblib.load(os.path.join(model_dir, "model.pkl"))


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return model.predict_proba(data)[:, 1].tolist()
