"""Readers for raw behaviour logs → bronze Parquet (DESIGN.md data flow step 1).

run.py (the stage: `run_ingest`), common.py (records, field checks, batching, quarantine),
one reader per format: amazon2023.py, amazon2014.py, recbole.py, generic.py (the layout other
converters write), and synth.py (the synthetic multi-domain generator in Amazon-2023 format).
"""
