import CProtobuf
import Foundation
import SPPCore
import SPPGraph

/// Reads ONNX files into a `Graph`.
///
/// The file is untrusted input: protobuf-c parses it (and fails cleanly on
/// corrupt or truncated bytes, see schemas/onnx.proto for why the schema
/// subset is acyclic), and every count, dimension, length and offset is
/// checked before it is used. Problems are reported as `ONNXImportError`,
/// never by trapping.
///
/// What the import does, in order:
/// 1. parse `ModelProto`, check the default-domain opset against `Options.supportedOpsets`;
/// 2. initializers become constants (graph inputs that are also initializers are dropped from the inputs);
/// 3. graph inputs and outputs become `ValueInfo` (unnamed dimensions get `<value>_dim<i>` symbols);
/// 4. nodes are mapped in file order (ONNX guarantees topological order): `Constant` nodes become
///    initializers, unnamed nodes are named `<op_type>_<index>`, older-opset forms are rewritten
///    to the newest one (`ImportSession+Opset.swift`);
/// 5. the graph is verified.
public enum ONNXImporter {
    /// Limits of what is accepted, in one place.
    public struct Options: Sendable {
        /// Versions of the default (`ai.onnx`) operator set accepted. The upper
        /// end is the newest opset of onnx 1.23 (28), whose operator semantics
        /// the runtime implements; a newer opset may change them. Old opsets are
        /// read from 1 on: the operator forms of opsets before 7 that differ and
        /// are not rewritten (binary ops with a `broadcast` attribute, Reshape's
        /// `shape` attribute, …) are rejected node by node, see
        /// `ImportSession+Opset.swift`.
        public var supportedOpsets: ClosedRange<Int> = 1...28

        /// The defaults above.
        public init() {}
    }

    /// Imports the ONNX model at `path`. External data is resolved relative to the file's folder.
    public static func load(path: String, options: Options = Options()) throws -> ONNXModel {
        let data = try readFile(path)
        return try load(data: data, baseDirectory: directory(of: path), source: path, options: options)
    }

    /// Imports an ONNX model from its serialized bytes. `baseDirectory` is the
    /// folder external data locations are relative to; nil when the model has none.
    public static func load(data: Data, baseDirectory: String?, options: Options = Options()) throws -> ONNXModel {
        try load(data: data, baseDirectory: baseDirectory, source: "ONNX data", options: options)
    }

    /// Reads a file holding one serialized `TensorProto`, as in the
    /// `test_data_set_*/input_*.pb` files of ONNX test cases. External data is
    /// resolved relative to the file's folder.
    public static func readTensor(path: String) throws -> Tensor {
        let data = try readFile(path)
        guard !data.isEmpty else {
            throw ONNXImportError.notAProtobuf(source: path, message: "TensorProto", byteCount: 0)
        }
        let proto = data.withUnsafeBytes { buffer in
            onnx__tensor_proto__unpack(nil, buffer.count, buffer.baseAddress?.assumingMemoryBound(to: UInt8.self))
        }
        guard let proto else {
            throw ONNXImportError.notAProtobuf(source: path, message: "TensorProto", byteCount: data.count)
        }
        defer { onnx__tensor_proto__free_unpacked(proto, nil) }
        let session = ImportSession(baseDirectory: directory(of: path), options: Options())
        let name = cString(proto.pointee.name)
        return try session.tensor(proto, name: name.isEmpty ? (path as NSString).lastPathComponent : name)
    }

    static func load(data: Data, baseDirectory: String?, source: String, options: Options) throws -> ONNXModel {
        // protobuf-c reads zero bytes as an empty, valid message: say what it is instead.
        guard !data.isEmpty else {
            throw ONNXImportError.notAProtobuf(source: source, message: "ModelProto", byteCount: 0)
        }
        let proto = data.withUnsafeBytes { buffer in
            onnx__model_proto__unpack(nil, buffer.count, buffer.baseAddress?.assumingMemoryBound(to: UInt8.self))
        }
        guard let proto else {
            throw ONNXImportError.notAProtobuf(source: source, message: "ModelProto", byteCount: data.count)
        }
        defer { onnx__model_proto__free_unpacked(proto, nil) }
        let session = ImportSession(baseDirectory: baseDirectory, options: options)
        return try session.importModel(proto, source: source)
    }

    static func readFile(_ path: String) throws -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ONNXImportError.fileUnreadable(path: path, reason: "no such file")
        }
        guard !isDirectory.boolValue else {
            throw ONNXImportError.fileUnreadable(path: path, reason: "it is a directory")
        }
        do {
            // Mapped: the bytes are only read once, by protobuf-c.
            return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw ONNXImportError.fileUnreadable(path: path, reason: (error as NSError).localizedDescription)
        }
    }

    static func directory(of path: String) -> String {
        let dir = (path as NSString).deletingLastPathComponent
        return dir.isEmpty ? "." : dir
    }
}
