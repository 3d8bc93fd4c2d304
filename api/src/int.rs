//! Integer fields as JSON Schema defines `integer`: any number with a zero
//! fractional part, so `105.0` is the integer 105 (serde alone refuses a
//! float for a `u64`, which refused requests valid by the document).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

struct Int<T>(PhantomData<T>);

impl<T: TryFrom<u64>> Visitor<'_> for Int<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
        self.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // 2^64 is exactly representable; anything below it with no fraction
        // converts without loss of its integer value as parsed.
        if v.fract() != 0.0 || !(0.0..18_446_744_073_709_551_616.0).contains(&v) {
            return Err(E::custom(format!(
                "{v} is not a non-negative integer in range"
            )));
        }
        self.visit_u64(v as u64)
    }
}

/// A required integer field.
pub(crate) fn de<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Int(PhantomData))
}

/// An optional integer field (`null` or absent: `None`); use with
/// `#[serde(default)]`.
pub(crate) fn opt<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    struct Opt<T>(PhantomData<T>);
    impl<'de, T: TryFrom<u64>> Visitor<'de> for Opt<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            de(d).map(Some)
        }
    }
    d.deserialize_option(Opt(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::de")]
        a: u32,
        #[serde(default, deserialize_with = "super::opt")]
        b: Option<u64>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn integral_numbers_are_integers() {
        assert_eq!(parse(r#"{"a":5}"#).unwrap(), T { a: 5, b: None });
        assert_eq!(parse(r#"{"a":5.0,"b":null}"#).unwrap(), T { a: 5, b: None });
        assert_eq!(
            parse(r#"{"a":1e3,"b":7.0}"#).unwrap(),
            T {
                a: 1000,
                b: Some(7)
            }
        );
        for bad in [
            r#"{"a":5.5}"#,
            r#"{"a":-1}"#,
            r#"{"a":"5"}"#,
            r#"{"a":4294967296}"#,
            r#"{"a":1,"b":-2.0}"#,
            r#"{"a":1,"b":1e30}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
