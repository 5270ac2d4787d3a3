//! Calling any gRPC method by path with raw protobuf bytes, so a test can walk
//! the descriptor set and call every RPC without knowing its types.

use bytes_codec::RawCodec;
use tonic::Status;
use tonic::transport::Channel;

/// Calls `path` with an empty request message and `authorization` (if any).
/// Returns the status (OK when the call succeeded).
pub async fn call_empty(
    channel: Channel,
    path: &str,
    server_streaming: bool,
    authorization: Option<&str>,
) -> Status {
    call(channel, path, server_streaming, authorization, Vec::new()).await
}

/// Calls `path` with the encoded request `body` and `authorization` (if
/// any). Returns the status (OK when the call succeeded).
pub async fn call(
    channel: Channel,
    path: &str,
    server_streaming: bool,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    if let Err(error) = grpc.ready().await {
        return Status::unavailable(format!("channel not ready: {error}"));
    }
    let mut request = tonic::Request::new(body);
    if let Some(value) = authorization {
        match value.parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => return Status::internal("authorization is not valid metadata"),
        }
    }
    let path = match path.parse() {
        Ok(path) => path,
        Err(_) => return Status::internal(format!("not a path: {path}")),
    };
    let result = if server_streaming {
        match grpc.server_streaming(request, path, RawCodec).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
            Err(status) => Err(status),
        }
    } else {
        grpc.unary(request, path, RawCodec).await.map(|_| ())
    };
    match result {
        Ok(()) => Status::ok(""),
        Err(status) => status,
    }
}

mod bytes_codec {
    use prost::bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Passes message bytes through untouched.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawCodec;
        type Decoder = RawCodec;

        fn encoder(&mut self) -> Self::Encoder {
            RawCodec
        }

        fn decoder(&mut self) -> Self::Decoder {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;

        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
}
