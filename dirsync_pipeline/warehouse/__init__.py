"""The warehouse: the table contract, DuckDB staging and publication, change events, history, Parquet outputs."""
