import CProtobuf

// Small readers for the structs protobuf-c generates: unset strings and
// sub-messages are NULL, repeated fields are (count, pointer) pairs.

/// A protobuf-c string field; unset (NULL) reads as "".
func cString(_ p: UnsafeMutablePointer<CChar>?) -> String {
    guard let p else { return "" }
    return String(cString: p)
}

/// A repeated message field as an array of pointers (never holding NULL).
func cMessages<T>(_ count: Int, _ base: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?) -> [UnsafeMutablePointer<T>] {
    guard count > 0, let base else { return [] }
    return UnsafeBufferPointer(start: base, count: count).compactMap { $0 }
}

/// A repeated string field.
func cStrings(_ count: Int, _ base: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [String] {
    guard count > 0, let base else { return [] }
    return UnsafeBufferPointer(start: base, count: count).map { cString($0) }
}

/// A repeated scalar field.
func cScalars<T>(_ count: Int, _ base: UnsafeMutablePointer<T>?) -> UnsafeBufferPointer<T> {
    guard count > 0, let base else { return UnsafeBufferPointer(start: nil, count: 0) }
    return UnsafeBufferPointer(start: base, count: count)
}

/// A `bytes` field as a string (ONNX keeps UTF-8 text in `bytes` fields).
func cText(_ b: ProtobufCBinaryData) -> String {
    guard b.len > 0, let data = b.data else { return "" }
    return String(decoding: UnsafeBufferPointer(start: data, count: b.len), as: UTF8.self)
}

/// Field numbers of the fields protobuf-c kept as unknown: those this subset
/// of onnx.proto leaves out (subgraphs, non-tensor types), see schemas/onnx.proto.
func unknownFieldNumbers(_ message: ProtobufCMessage) -> [UInt32] {
    guard message.n_unknown_fields > 0, let fields = message.unknown_fields else { return [] }
    return UnsafeBufferPointer(start: fields, count: Int(message.n_unknown_fields)).map(\.tag)
}
