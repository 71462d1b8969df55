//! Typed, validated configuration (YAML).
