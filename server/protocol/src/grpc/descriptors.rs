//! The protocol's message descriptors, for the two places that need the
//! schema at run time and not only the generated types: a Triton
//! `config.pbtxt` is protobuf text format, parsed against
//! `inference.ModelConfig` (by the runtime's manifest reader), and Triton's
//! JSON of a configuration is protobuf's JSON mapping of that message (the
//! server's model configuration extension). Both go through `prost_reflect`, whose
//! `transcode_*` converts to and from the generated types.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// The encoded `FileDescriptorSet` of `proto/*.proto`, written by `build.rs`
/// from the same compilation the generated types come from.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptors.bin"));

/// Every message and enum of the `inference` package.
pub static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTORS).expect("build.rs wrote a valid descriptor set")
});

/// `inference.ModelConfig`: the message of a `config.pbtxt`, and of the
/// model configuration extension's answers.
pub fn model_config() -> MessageDescriptor {
    POOL.get_message_by_name("inference.ModelConfig")
        .expect("proto/model_config.proto declares inference.ModelConfig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_has_the_generated_messages() {
        let c = model_config();
        assert_eq!(c.get_field_by_name("backend").map(|f| f.number()), Some(17));
        assert!(POOL
            .get_message_by_name("inference.ModelInferRequest")
            .is_some());
    }
}
