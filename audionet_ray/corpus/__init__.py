"""Speech made or found, decoded once into a prepared dataset: decoding (audio), classes, speakers
and the test-speaker rule (discover), generated speech (speech_data, demo_data, wakeword,
confusables, keyword_source), rooms and far-field audio (rooms, far_field), and prepare, which
writes the Parquet shards and the manifest. Imports core."""
