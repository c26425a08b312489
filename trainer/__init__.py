"""Training: data loading and generation, feature pipeline, ONNX export with a parity gate,
manifest and reports.

Heavy libraries (pandas, scikit-learn, skl2onnx) are imported by the submodules that need them,
so importing this package stays cheap. Public entry points:

- ``trainer.flights.generate_flights`` / ``write_flights_csv``: the seeded SCL-schema generator
- ``trainer.features.flight_features`` / ``flight_target``: raw flight rows -> model features
- ``trainer.train.train``: train, check parity and publish (what ``pronto train`` runs)
- publishing to the model repository and the typed ``model.json`` live in ``pronto_contract``,
  shared with the server
"""

__all__: list[str] = []
