//! The `data` arrays of JSON tensors, read straight into little-endian bytes
//! (no intermediate `serde_json::Value` tree) and written back out.

use std::fmt;

use bytes::BufMut;
use ferroserve_backend_core::{DataType, Tensor};
use half::f16;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

/// Collects the elements of a (possibly nested) JSON array as one dtype.
#[derive(Debug)]
pub struct Sink {
    pub dtype: DataType,
    pub buf: Vec<u8>,
    pub count: usize,
}

impl Sink {
    pub fn new(dtype: DataType, capacity_hint: usize) -> Sink {
        Sink {
            dtype,
            buf: Vec::with_capacity(capacity_hint),
            count: 0,
        }
    }

    fn wrong<E: de::Error>(&self, got: impl fmt::Display) -> E {
        let want = match self.dtype {
            DataType::Bool => "a boolean",
            DataType::Bytes => "a string",
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => "a number",
            _ => "an integer",
        };
        E::custom(format_args!(
            "element {}: expected {want} for {}, received {got}",
            self.count, self.dtype
        ))
    }

    /// Appends `v` as a `T`, refusing it if out of `T`'s range; `put` writes
    /// it little-endian straight into the buffer (no allocation per element).
    fn int<E: de::Error, T: TryFrom<i128> + Copy>(
        &mut self,
        v: i128,
        put: impl Fn(&mut Vec<u8>, T),
    ) -> Result<(), E> {
        let Ok(x) = T::try_from(v) else {
            return Err(E::custom(format_args!(
                "element {}: {v} is out of range for {}",
                self.count, self.dtype
            )));
        };
        put(&mut self.buf, x);
        Ok(())
    }

    fn push_int<E: de::Error>(&mut self, v: i128) -> Result<(), E> {
        match self.dtype {
            DataType::Uint8 => self.int::<E, u8>(v, |b, x| b.put_u8(x))?,
            DataType::Uint16 => self.int::<E, u16>(v, |b, x| b.put_u16_le(x))?,
            DataType::Uint32 => self.int::<E, u32>(v, |b, x| b.put_u32_le(x))?,
            DataType::Uint64 => self.int::<E, u64>(v, |b, x| b.put_u64_le(x))?,
            DataType::Int8 => self.int::<E, i8>(v, |b, x| b.put_i8(x))?,
            DataType::Int16 => self.int::<E, i16>(v, |b, x| b.put_i16_le(x))?,
            DataType::Int32 => self.int::<E, i32>(v, |b, x| b.put_i32_le(x))?,
            DataType::Int64 => self.int::<E, i64>(v, |b, x| b.put_i64_le(x))?,
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => return self.push_float(v as f64),
            DataType::Bool | DataType::Bytes => return Err(self.wrong(v)),
        }
        self.count += 1;
        Ok(())
    }

    fn push_float<E: de::Error>(&mut self, v: f64) -> Result<(), E> {
        // JSON numbers are always finite; one that overflows the target type
        // would silently become infinity, so it is refused like an integer
        // out of range.
        let out_of_range = |max: f64| {
            E::custom(format_args!(
                "element {}: {} is out of range for {} (largest magnitude {})",
                self.count,
                ryu::Buffer::new().format(v),
                self.dtype,
                ryu::Buffer::new().format(max)
            ))
        };
        match self.dtype {
            DataType::Fp16 => {
                let h = f16::from_f64(v);
                if h.is_infinite() {
                    return Err(out_of_range(f16::MAX.to_f64()));
                }
                self.buf.extend_from_slice(&h.to_le_bytes())
            }
            DataType::Fp32 => {
                let x = v as f32;
                if x.is_infinite() {
                    return Err(out_of_range(f32::MAX as f64));
                }
                self.buf.extend_from_slice(&x.to_le_bytes())
            }
            DataType::Fp64 => self.buf.extend_from_slice(&v.to_le_bytes()),
            _ => return Err(self.wrong(v)),
        }
        self.count += 1;
        Ok(())
    }
}

/// Deserializes one JSON value (array or scalar) into the sink.
pub struct Flatten<'s>(pub &'s mut Sink);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} values", self.0.dtype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.0.dtype != DataType::Bool {
            return Err(self.0.wrong(v));
        }
        self.0.buf.push(v as u8);
        self.0.count += 1;
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push_int(v as i128)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push_int(v as i128)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push_float(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.0.dtype != DataType::Bytes {
            return Err(self.0.wrong(format_args!("{v:?}")));
        }
        self.0
            .buf
            .extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.buf.extend_from_slice(v.as_bytes());
        self.0.count += 1;
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.0.wrong("null"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(self.0.wrong("an object"))
    }
}

/// Writes a tensor's elements as the flat JSON array the protocol's responses
/// carry. Floats that JSON cannot spell are written as `NaN`, `Infinity` and
/// `-Infinity`, which Python's and tritonclient's parsers read back exactly;
/// BYTES elements that are not UTF-8 cannot be JSON strings at all, so they
/// are an error telling the client to ask for binary output instead.
pub fn write_data(t: &Tensor, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'[');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    macro_rules! ints {
        ($ty:ty, $n:expr) => {{
            let mut buf = itoa::Buffer::new();
            for c in t.data.chunks_exact($n) {
                sep(out);
                out.extend_from_slice(
                    buf.format(<$ty>::from_le_bytes(c.try_into().expect("chunk size")))
                        .as_bytes(),
                );
            }
        }};
    }
    macro_rules! floats {
        ($conv:expr, $n:expr) => {{
            let mut buf = ryu::Buffer::new();
            for c in t.data.chunks_exact($n) {
                sep(out);
                let v = $conv(c);
                out.extend_from_slice(if v.is_finite() {
                    buf.format_finite(v).as_bytes()
                } else if v.is_nan() {
                    b"NaN"
                } else if v > 0.0 {
                    b"Infinity"
                } else {
                    b"-Infinity"
                });
            }
        }};
    }
    match t.dtype {
        DataType::Bool => {
            for &b in t.data.iter() {
                sep(out);
                out.extend_from_slice(if b != 0 { b"true" } else { b"false" });
            }
        }
        DataType::Uint8 => ints!(u8, 1),
        DataType::Uint16 => ints!(u16, 2),
        DataType::Uint32 => ints!(u32, 4),
        DataType::Uint64 => ints!(u64, 8),
        DataType::Int8 => ints!(i8, 1),
        DataType::Int16 => ints!(i16, 2),
        DataType::Int32 => ints!(i32, 4),
        DataType::Int64 => ints!(i64, 8),
        DataType::Fp16 => floats!(|c: &[u8]| f16::from_le_bytes([c[0], c[1]]).to_f32(), 2),
        DataType::Fp32 => floats!(
            |c: &[u8]| f32::from_le_bytes(c.try_into().expect("4 bytes")),
            4
        ),
        DataType::Fp64 => floats!(
            |c: &[u8]| f64::from_le_bytes(c.try_into().expect("8 bytes")),
            8
        ),
        DataType::Bytes => {
            for (i, s) in t.string_elements().into_iter().enumerate() {
                let s = std::str::from_utf8(s).map_err(|_| {
                    format!(
                        "element {i} is not valid UTF-8 and cannot be sent as a JSON string; \
                         request this output with \"binary_data\": true"
                    )
                })?;
                sep(out);
                serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
            }
        }
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(dtype: DataType, json: &str) -> Result<Sink, String> {
        let mut sink = Sink::new(dtype, 0);
        let mut de = serde_json::Deserializer::from_str(json);
        Flatten(&mut sink)
            .deserialize(&mut de)
            .map_err(|e| e.to_string())?;
        Ok(sink)
    }

    #[test]
    fn nested_arrays_flatten_in_row_major_order() {
        let s = parse(DataType::Int32, "[[1, 2], [3, -4]]").unwrap();
        assert_eq!(s.count, 4);
        let v: Vec<i32> = s
            .buf
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v, vec![1, 2, 3, -4]);
    }

    #[test]
    fn wrong_element_types_are_named() {
        let e = parse(DataType::Uint8, "[1, 300]").unwrap_err();
        assert!(
            e.contains("element 1") && e.contains("300") && e.contains("UINT8"),
            "{e}"
        );
        let e = parse(DataType::Int64, "[1.5]").unwrap_err();
        assert!(
            e.contains("expected an integer for INT64, received 1.5"),
            "{e}"
        );
        let e = parse(DataType::Fp32, "[\"a\"]").unwrap_err();
        assert!(e.contains("received \"a\""), "{e}");
        let e = parse(DataType::Bool, "[1]").unwrap_err();
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn output_round_trips_through_json() {
        for (dtype, json) in [
            (DataType::Fp16, "[0.5,-2.0]"),
            (DataType::Fp64, "[0.1,1e300]"),
            (DataType::Bool, "[true,false]"),
            (DataType::Uint64, "[18446744073709551615,0]"),
            (DataType::Bytes, "[\"héllo\",\"\"]"),
        ] {
            let s = parse(dtype, json).unwrap();
            let t = Tensor::new(dtype, vec![2], bytes::Bytes::from(s.buf)).unwrap();
            let mut out = Vec::new();
            write_data(&t, &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), json, "{dtype}");
        }
    }

    #[test]
    fn non_finite_floats_and_non_utf8_bytes() {
        let data: Vec<u8> = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = Tensor::new(DataType::Fp32, vec![4], bytes::Bytes::from(data)).unwrap();
        let mut out = Vec::new();
        write_data(&t, &mut out).unwrap();
        assert_eq!(out, b"[Infinity,-Infinity,NaN,1.5]");
        let t = Tensor::from_strings(vec![2], &[&b"ok"[..], &b"\xff"[..]]).unwrap();
        let e = write_data(&t, &mut Vec::new()).unwrap_err();
        assert!(e.contains("element 1") && e.contains("binary_data"), "{e}");
    }

    #[test]
    fn out_of_range_floats_are_refused() {
        let e = parse(DataType::Fp32, "[1e39]").unwrap_err();
        assert!(e.contains("1e39") && e.contains("FP32"), "{e}");
        let e = parse(DataType::Fp16, "[70000]").unwrap_err();
        assert!(e.contains("70000") && e.contains("FP16"), "{e}");
        assert!(parse(DataType::Fp16, "[65504]").is_ok());
    }
}
