"""Open Inference Protocol v2 (KServe / Triton) facade: ``inference.GRPCInferenceService`` on the RM server.

An off-the-shelf client scores through it::

    import numpy as np, tritonclient.grpc as tc
    client = tc.InferenceServerClient("127.0.0.1:50051")
    prompt, response = tc.InferInput("PROMPT", [2], "BYTES"), tc.InferInput("RESPONSE", [2], "BYTES")
    prompt.set_data_from_numpy(np.array([b"hi", b"hi"], dtype=object)); response.set_data_from_numpy(...)
    out = client.infer("chat-rm", [prompt, response], headers={"authorization": "Bearer T"})
    out.as_numpy("REWARD")      # float32 [n]; NaN where ERROR_CODE != 0
    out.as_numpy("ERROR_CODE")  # int32 [n], `reward_services.types.ErrorCode`

Inputs: PROMPT, RESPONSE (BYTES [n], required), REFERENCE (BYTES [n], optional). Outputs: REWARD (FP32 [n]),
ERROR_CODE (INT32 [n]). Per-item errors stay per item, as in our own protocol.
"""

from __future__ import annotations

import struct

import grpc
import numpy as np

from reward_services.proto import grpc_predict_v2_pb2 as oip
from reward_services.types import ScoreItem

WIRE_SERVICE = "inference.GRPCInferenceService"  # the name tritonclient/KServe clients call


def _bytes_tensor(tensor, raw: bytes | None) -> list[bytes]:
    """Elements of a BYTES tensor: from raw contents (4-byte little-endian length prefixes) or bytes_contents."""
    if raw is None:
        return list(tensor.contents.bytes_contents)
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ValueError(f"input {tensor.name}: truncated length prefix")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise ValueError(f"input {tensor.name}: element longer than the buffer")
        out.append(raw[pos:pos + n])
        pos += n
    return out


class OIPServicer:
    """Translates ModelInfer to `RewardServicer.score_items`."""

    def __init__(self, core) -> None:
        self.core = core

    def _ready(self) -> bool:
        return not self.core.draining.is_set()

    def ServerLive(self, request, context):  # noqa: N802
        return oip.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return oip.ServerReadyResponse(ready=self._ready())

    def ModelReady(self, request, context):  # noqa: N802
        return oip.ModelReadyResponse(ready=self._ready() and request.name == self.core.info.name)

    def ServerMetadata(self, request, context):  # noqa: N802
        return oip.ServerMetadataResponse(name="mixrl-reward-service", version="1", extensions=[])

    def ModelMetadata(self, request, context):  # noqa: N802
        if request.name != self.core.info.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}; serving {self.core.info.name!r}")
        T = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=self.core.info.name, versions=[self.core.info.model_digest], platform=f"mixrl_{self.core.info.kind}",
            inputs=[T(name="PROMPT", datatype="BYTES", shape=[-1]), T(name="RESPONSE", datatype="BYTES", shape=[-1]),
                    T(name="REFERENCE", datatype="BYTES", shape=[-1])],
            outputs=[T(name="REWARD", datatype="FP32", shape=[-1]), T(name="ERROR_CODE", datatype="INT32", shape=[-1])],
        )

    def ModelInfer(self, request, context):  # noqa: N802
        if request.model_name != self.core.info.name:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"unknown model {request.model_name!r}; serving {self.core.info.name!r}")
        try:
            columns: dict[str, list[bytes]] = {}
            use_raw = len(request.raw_input_contents) == len(request.inputs) and len(request.inputs) > 0
            for k, tensor in enumerate(request.inputs):
                if tensor.datatype != "BYTES":
                    raise ValueError(f"input {tensor.name} must be BYTES, got {tensor.datatype}")
                columns[tensor.name] = _bytes_tensor(tensor, request.raw_input_contents[k] if use_raw else None)
            missing = {"PROMPT", "RESPONSE"} - set(columns)
            if missing:
                raise ValueError(f"missing inputs {sorted(missing)}; expected PROMPT, RESPONSE[, REFERENCE]")
            n = len(columns["RESPONSE"])
            if any(len(v) != n for v in columns.values()):
                raise ValueError("inputs PROMPT/RESPONSE/REFERENCE must have the same length")
            refs = columns.get("REFERENCE")
            items = [ScoreItem(id=str(i), prompt=columns["PROMPT"][i].decode(), response=columns["RESPONSE"][i].decode(),
                               reference=refs[i].decode() if refs else None) for i in range(n)]
        except (ValueError, UnicodeDecodeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

        def run():
            results = self.core.score_items(items, context)
            rewards = np.array([r.reward if r.reward is not None else np.nan for r in results], dtype="<f4")
            codes = np.array([int(r.error) for r in results], dtype="<i4")
            Out = oip.ModelInferResponse.InferOutputTensor
            return oip.ModelInferResponse(
                model_name=self.core.info.name, model_version=request.model_version, id=request.id,
                outputs=[Out(name="REWARD", datatype="FP32", shape=[n]), Out(name="ERROR_CODE", datatype="INT32", shape=[n])],
                raw_output_contents=[rewards.tobytes(), codes.tobytes()],
            )

        # request-level failures (draining, queue full, deadline) are `RequestError`s of the core's `score_items`;
        # `_guarded` turns them into the RPC's status, so this module needs no server import
        return self.core._guarded(context, run)


def add_oip_facade(core, server: grpc.Server) -> None:
    """Register the facade under the wire name ``inference.GRPCInferenceService`` (our proto package differs,
    see grpc_predict_v2.proto)."""
    servicer = OIPServicer(core)
    rpcs = {
        "ServerLive": (oip.ServerLiveRequest, oip.ServerLiveResponse),
        "ServerReady": (oip.ServerReadyRequest, oip.ServerReadyResponse),
        "ModelReady": (oip.ModelReadyRequest, oip.ModelReadyResponse),
        "ServerMetadata": (oip.ServerMetadataRequest, oip.ServerMetadataResponse),
        "ModelMetadata": (oip.ModelMetadataRequest, oip.ModelMetadataResponse),
        "ModelInfer": (oip.ModelInferRequest, oip.ModelInferResponse),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name), request_deserializer=req.FromString,
                                                  response_serializer=resp.SerializeToString)
        for name, (req, resp) in rpcs.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(WIRE_SERVICE, handlers),))
