"""Proving a bundle matches the reference: metrics and `ParityReport` (`parity`), the realistic parity inputs
(`samples`, from the sample pictures that `sample_data` finds, checks and downloads), the whole-use gates
(`gates`: documentation examples, a tracking session) and video sessions against transformers (`tracking_parity`).

Import the modules themselves: `sample_data` needs only the standard library, the others bring torch."""
