//! Property tests of the request decoders (run in CI with the rest of the
//! suite): whatever bytes a client sends, the HTTP decoder (JSON plus the
//! binary extension) and the gRPC conversion return a request or an error.
//! They never panic, and never allocate far beyond the size of the input —
//! checked with a counting global allocator, because a small request that
//! makes the server reserve gigabytes is a denial of service.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use ferroserve_protocol::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_protocol::grpc::proto::{
    infer_parameter::ParameterChoice, InferParameter, InferTensorContents, ModelInferRequest,
};
use proptest::prelude::*;
use prost::Message;

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| {
            let now = l.get() + layout.size();
            l.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns the peak bytes it had allocated at once on this thread.
fn peak_allocation(f: impl FnOnce()) -> usize {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(|p| p.get()).saturating_sub(base)
}

/// Generous: decoding copies typed data once and JSON text expands at most
/// 8x (one digit becomes an 8-byte INT64/FP64), plus fixed overhead.
fn allocation_bound(input_len: usize) -> usize {
    16 * input_len + (1 << 20)
}

const DTYPES: &[&str] = &[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES", "FLOAT", "",
];

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| if v.is_finite() {
            format!("{v:e}")
        } else {
            "1e400".into()
        }),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z\\\\\"]{0,6}".prop_map(|s| format!("{s:?}")),
        Just("null".to_string()),
        Just("{}".to_string()),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(|v| format!("[{}]", v.join(",")))
    })
}

fn shape() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(
        prop_oneof![
            0i64..5,
            Just(-1i64),
            Just(i64::MAX),
            Just(1i64 << 40),
            any::<i64>()
        ],
        0..4,
    )
}

prop_compose! {
    fn json_input()(
        name in "[a-z_]{0,6}",
        dtype in prop::sample::select(DTYPES),
        shape in shape(),
        data in prop::option::of(json_value()),
        binary_size in prop::option::of(prop_oneof![0u64..64, Just(u64::MAX), Just(1u64 << 40)]),
    ) -> String {
        let mut fields = vec![
            format!("\"name\":{name:?}"),
            format!("\"datatype\":{dtype:?}"),
            format!("\"shape\":{shape:?}"),
        ];
        if let Some(d) = data {
            fields.push(format!("\"data\":{d}"));
        }
        if let Some(b) = binary_size {
            fields.push(format!("\"parameters\":{{\"binary_data_size\":{b}}}"));
        }
        format!("{{{}}}", fields.join(","))
    }
}

prop_compose! {
    fn http_request()(
        inputs in prop::collection::vec(json_input(), 0..4),
        outputs in prop::collection::vec("[a-z]{0,4}", 0..3),
        binary in prop::collection::vec(any::<u8>(), 0..128),
        header_delta in prop_oneof![Just(0i64), -3i64..3, Just(1i64 << 32)],
        params in prop::option::of(json_value()),
    ) -> (Vec<u8>, Option<usize>) {
        let mut header = format!("{{\"inputs\":[{}]", inputs.join(","));
        if !outputs.is_empty() {
            let outs: Vec<String> = outputs
                .iter()
                .map(|o| format!("{{\"name\":{o:?},\"parameters\":{{\"binary_data\":true}}}}"))
                .collect();
            header.push_str(&format!(",\"outputs\":[{}]", outs.join(",")));
        }
        if let Some(p) = params {
            header.push_str(&format!(",\"parameters\":{{\"timeout\":{p},\"binary_data_output\":{p}}}"));
        }
        header.push('}');
        let header_len = (header.len() as i64 + header_delta).max(0) as usize;
        let mut body = header.into_bytes();
        let with_binary = !binary.is_empty();
        body.extend_from_slice(&binary);
        (body, with_binary.then_some(header_len))
    }
}

fn check_http(body: Vec<u8>, header_len: Option<usize>) {
    let len = body.len();
    let peak = peak_allocation(|| {
        let _ = ferroserve_protocol::json::decode_request(Bytes::from(body), header_len);
    });
    assert!(
        peak <= allocation_bound(len),
        "decoding {len} bytes allocated {peak} bytes at once"
    );
}

fn contents() -> impl Strategy<Value = InferTensorContents> {
    (
        prop::collection::vec(any::<bool>(), 0..6),
        prop::collection::vec(any::<i32>(), 0..6),
        prop::collection::vec(any::<i64>(), 0..6),
        prop::collection::vec(any::<u32>(), 0..6),
        prop::collection::vec(any::<u64>(), 0..6),
        prop::collection::vec(any::<f32>(), 0..6),
        prop::collection::vec(any::<f64>(), 0..6),
        prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..5).prop_map(Bytes::from),
            0..6,
        ),
    )
        .prop_map(|(b, i, i64s, u, u64s, f, d, s)| InferTensorContents {
            bool_contents: b,
            int_contents: i,
            int64_contents: i64s,
            uint_contents: u,
            uint64_contents: u64s,
            fp32_contents: f,
            fp64_contents: d,
            bytes_contents: s,
        })
}

prop_compose! {
    fn grpc_request()(
        inputs in prop::collection::vec(
            ("[a-z]{0,4}", prop::sample::select(DTYPES), shape(), prop::option::of(contents())),
            0..4,
        ),
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from), 0..4),
        outputs in prop::collection::vec("[a-z]{0,4}", 0..3),
        timeout in prop::option::of(prop_oneof![
            any::<i64>().prop_map(ParameterChoice::Int64Param),
            any::<u64>().prop_map(ParameterChoice::Uint64Param),
            any::<bool>().prop_map(ParameterChoice::BoolParam),
        ]),
    ) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: inputs
                .into_iter()
                .map(|(name, dtype, shape, contents)| InferInputTensor {
                    name,
                    datatype: dtype.into(),
                    shape,
                    parameters: Default::default(),
                    contents,
                })
                .collect(),
            outputs: outputs
                .into_iter()
                .map(|name| InferRequestedOutputTensor { name, parameters: Default::default() })
                .collect(),
            raw_input_contents: raw,
            parameters: timeout
                .map(|t| ("timeout".to_string(), InferParameter { parameter_choice: Some(t) }))
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }
}

fn check_grpc_bytes(bytes: &[u8]) {
    let peak = peak_allocation(|| {
        if let Ok(msg) = ModelInferRequest::decode(bytes) {
            let _ = ferroserve_protocol::grpc::decode_request(msg);
        }
    });
    assert!(
        peak <= allocation_bound(bytes.len()),
        "decoding {} bytes allocated {peak} bytes at once",
        bytes.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn http_decoder_survives_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        header_len in prop::option::of(0usize..600),
    ) {
        check_http(body, header_len);
    }

    #[test]
    fn http_decoder_survives_structured_requests((body, header_len) in http_request()) {
        check_http(body, header_len);
    }

    #[test]
    fn grpc_conversion_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_grpc_bytes(&bytes);
    }

    #[test]
    fn grpc_conversion_survives_structured_requests(msg in grpc_request()) {
        check_grpc_bytes(&msg.encode_to_vec());
    }
}

/// The cases that matter most, spelled out: a tiny request must not be able
/// to make the decoder reserve memory for the shape it claims.
#[test]
fn huge_shapes_do_not_allocate() {
    check_http(
        br#"{"inputs":[{"name":"a","shape":[100000000000],"datatype":"FP64","data":[1]}]}"#
            .to_vec(),
        None,
    );
    check_http(
        br#"{"inputs":[{"name":"a","shape":[4611686018427387904,4],"datatype":"FP32","parameters":{"binary_data_size":0}}]}"#
            .to_vec(),
        Some(105),
    );
    let msg = ModelInferRequest {
        inputs: vec![InferInputTensor {
            name: "a".into(),
            datatype: "FP64".into(),
            shape: vec![1 << 40, 1 << 20],
            contents: Some(InferTensorContents {
                fp64_contents: vec![1.0],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    check_grpc_bytes(&msg.encode_to_vec());
}
