-- The seed's preprocessing with whole-input statistics: run it with `--windows global`
-- (Python: sql_windows="global"). The query is the same as seed_preprocessing.sql; only
-- the meaning of OVER () differs: here every AVG/STDDEV_SAMP ... OVER () is computed over
-- all the input's rows in a first pass (reading only feature_1..3), then the query runs
-- per chunk with those values as constants. The result is what Polars or DuckDB give for
-- the same query over the whole table, and does not depend on chunk sizes.
--
--   sluice run --windows global --input data.parquet --output out/ \
--       --sql examples/seed_preprocessing_global.sql
--
-- Input columns: feature_1, feature_2, feature_3 (float64), category (utf8), target (int64).
-- Output columns: feature_1, feature_2, feature_3, target, feature_interaction,
-- feature_sum, cat_A, cat_B, cat_C.
WITH features AS (
    SELECT
        feature_1,
        feature_2,
        feature_3,
        target,
        -- Feature engineering, from the raw (not yet normalized) values.
        feature_1 * feature_2 AS feature_interaction,
        feature_1 + feature_2 + feature_3 AS feature_sum,
        -- One-hot of `category` (which is dropped); a NULL category is all false, as in
        -- get_dummies. Quoted, or the names would be folded to lower case.
        COALESCE(category = 'A', FALSE) AS "cat_A",
        COALESCE(category = 'B', FALSE) AS "cat_B",
        COALESCE(category = 'C', FALSE) AS "cat_C"
    FROM chunk
)
-- Z-score with the whole input's mean and sample standard deviation (ddof=1). A column is
-- left as it is unless its std is > 0: a constant column (std 0) and a 1-row input (std
-- NULL) pass through unchanged.
SELECT
    CASE WHEN STDDEV_SAMP(feature_1) OVER () > 0
         THEN (feature_1 - AVG(feature_1) OVER ()) / STDDEV_SAMP(feature_1) OVER ()
         ELSE feature_1 END AS feature_1,
    CASE WHEN STDDEV_SAMP(feature_2) OVER () > 0
         THEN (feature_2 - AVG(feature_2) OVER ()) / STDDEV_SAMP(feature_2) OVER ()
         ELSE feature_2 END AS feature_2,
    CASE WHEN STDDEV_SAMP(feature_3) OVER () > 0
         THEN (feature_3 - AVG(feature_3) OVER ()) / STDDEV_SAMP(feature_3) OVER ()
         ELSE feature_3 END AS feature_3,
    target,
    CASE WHEN STDDEV_SAMP(feature_interaction) OVER () > 0
         THEN (feature_interaction - AVG(feature_interaction) OVER ())
              / STDDEV_SAMP(feature_interaction) OVER ()
         ELSE feature_interaction END AS feature_interaction,
    CASE WHEN STDDEV_SAMP(feature_sum) OVER () > 0
         THEN (feature_sum - AVG(feature_sum) OVER ()) / STDDEV_SAMP(feature_sum) OVER ()
         ELSE feature_sum END AS feature_sum,
    "cat_A",
    "cat_B",
    "cat_C"
FROM features
