-- The seed's `data_preprocessing` (streaming_pipeline.md, "Basic Streaming Processing") as
-- per-chunk SQL over the table `chunk` with columns feature_1, feature_2, feature_3 (float64),
-- category (utf8: A/B/C) and target (int64). Like the pandas version, statistics are per chunk.
--
-- Output columns, in pandas' order (get_dummies appends the dummies at the end):
--   feature_1, feature_2, feature_3, target, feature_interaction, feature_sum, cat_A, cat_B, cat_C
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
-- Z-score over the chunk with the sample standard deviation (pandas' ddof=1). A column is
-- left as it is unless its std is > 0: a constant column (std 0) and a 1-row chunk (std
-- NULL, NaN in pandas) pass through unchanged.
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
