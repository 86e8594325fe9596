import CProtobuf
import Foundation
import SPPCore

// TensorProto → Tensor.
//
// Where the elements are, by priority:
// - `data_location == EXTERNAL`: in a file next to the model (`external_data`
//   entries "location", "offset", "length"), raw little-endian bytes;
// - `raw_data`: raw little-endian bytes, row-major;
// - otherwise the typed field for the data type: float_data (float32),
//   double_data (float64), int64_data (int64), uint64_data (uint32, uint64),
//   int32_data (int32, int16, int8, uint16, uint8, bool, and float16/bfloat16
//   as bit patterns in the low 16 bits).
// The byte count is checked against shape × element size before anything is
// allocated, and bool bytes are normalised to 0/1 (any other byte would be an
// invalid Swift `Bool`).

#if _endian(big)
#error("raw ONNX tensor data is little-endian; this importer copies it as is")
#endif

extension ImportSession {
    func tensor(_ pointer: UnsafeMutablePointer<Onnx__TensorProto>, name: String) throws -> Tensor {
        let p = pointer.pointee
        let code = p.has_data_type != 0 ? p.data_type : 0
        guard let dtype = DType(rawValue: code) else {
            throw ONNXImportError.unsupportedDataType(value: name, typeName: DType.onnxName(code))
        }
        guard p.segment == nil else {
            throw ONNXImportError.unsupportedTensorEncoding(tensor: name, reason: "the tensor is split into segments, which is not supported")
        }
        let shape = try Self.checkedShape(cScalars(p.n_dims, p.dims), name: name)
        let count = shape.reduce(1, *)  // checkedShape proved that this and `count * size` do not overflow
        let byteCount = count * dtype.size

        if p.has_data_location != 0, p.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL {
            return try externalTensor(p, name: name, dtype: dtype, shape: shape, byteCount: byteCount)
        }
        if p.has_raw_data != 0 {
            guard p.raw_data.len == byteCount else {
                throw ONNXImportError.tensorDataSizeMismatch(tensor: name, expectedBytes: byteCount, actualBytes: p.raw_data.len)
            }
            let t = Tensor(dtype: dtype, shape: shape)
            if byteCount > 0, let data = p.raw_data.data { t.rawPointer.copyMemory(from: data, byteCount: byteCount) }
            if dtype == .bool { Self.normaliseBools(t) }
            return t
        }

        func fill<Source, Element>(_ values: UnsafeBufferPointer<Source>, _: Element.Type,
                                   _ convert: (Source) -> Element) throws -> Tensor {
            guard values.count == count else {
                throw ONNXImportError.tensorDataSizeMismatch(tensor: name, expectedBytes: byteCount,
                                                             actualBytes: values.count * dtype.size)
            }
            let t = Tensor(dtype: dtype, shape: shape)
            let out = t.rawPointer.bindMemory(to: Element.self, capacity: count)
            for i in 0..<count { out[i] = convert(values[i]) }
            return t
        }
        let int32s = cScalars(p.n_int32_data, p.int32_data)
        switch dtype {
        case .float32: return try fill(cScalars(p.n_float_data, p.float_data), Float.self) { $0 }
        case .float64: return try fill(cScalars(p.n_double_data, p.double_data), Double.self) { $0 }
        case .int64: return try fill(cScalars(p.n_int64_data, p.int64_data), Int64.self) { $0 }
        case .uint64: return try fill(cScalars(p.n_uint64_data, p.uint64_data), UInt64.self) { $0 }
        case .uint32: return try fill(cScalars(p.n_uint64_data, p.uint64_data), UInt32.self) { UInt32(truncatingIfNeeded: $0) }
        case .int32: return try fill(int32s, Int32.self) { $0 }
        case .int16: return try fill(int32s, Int16.self) { Int16(truncatingIfNeeded: $0) }
        case .int8: return try fill(int32s, Int8.self) { Int8(truncatingIfNeeded: $0) }
        case .uint16, .float16, .bfloat16: return try fill(int32s, UInt16.self) { UInt16(truncatingIfNeeded: $0) }
        case .uint8: return try fill(int32s, UInt8.self) { UInt8(truncatingIfNeeded: $0) }
        case .bool: return try fill(int32s, UInt8.self) { $0 != 0 ? 1 : 0 }
        }
    }

    /// Dimensions as `Int`, rejecting negative ones and shapes whose element or
    /// byte count overflows (the largest element is 8 bytes).
    static func checkedShape(_ dims: UnsafeBufferPointer<Int64>, name: String) throws -> [Int] {
        var shape: [Int] = []
        shape.reserveCapacity(dims.count)
        var count = 1
        for (i, d) in dims.enumerated() {
            guard d >= 0 else { throw ONNXImportError.badDimension(value: name, reason: "dimension \(i) is negative (\(d))") }
            let (c, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow, c <= Int.max / 8 else {
                throw ONNXImportError.badDimension(value: name, reason: "shape \(Array(dims)) has too many elements")
            }
            count = c
            shape.append(Int(d))
        }
        return shape
    }

    static func normaliseBools(_ t: Tensor) {
        let bytes = t.rawPointer.assumingMemoryBound(to: UInt8.self)
        for i in 0..<t.count where bytes[i] > 1 { bytes[i] = 1 }
    }

    /// A tensor whose bytes are in an external file. The location must be a
    /// relative path that stays inside the model's folder (checked on the path's
    /// text; symbolic links are followed, since model caches such as the
    /// Hugging Face hub's link every file into a shared blob folder).
    func externalTensor(_ p: Onnx__TensorProto, name: String, dtype: DType, shape: [Int], byteCount: Int) throws -> Tensor {
        var location: String?
        var offset = 0
        var length: Int?
        for entry in cMessages(p.n_external_data, p.external_data) {
            let key = cString(entry.pointee.key), value = cString(entry.pointee.value)
            switch key {
            case "location": location = value
            case "offset", "length":
                guard let v = Int(value), v >= 0 else {
                    throw ONNXImportError.externalDataInvalid(tensor: name, reason: "\(key) '\(value)' is not a non-negative integer")
                }
                if key == "offset" { offset = v } else { length = v }
            default: break  // "checksum", "basepath": not used
            }
        }
        guard let location, !location.isEmpty else {
            throw ONNXImportError.externalDataInvalid(tensor: name, reason: "no location given")
        }
        let file = try externalFile(location, tensor: name)
        // Without a length, the tensor's own size is read (several tensors may share one file).
        let readLength = length ?? byteCount
        guard offset <= file.count, readLength <= file.count - offset else {
            throw ONNXImportError.externalDataOutOfRange(tensor: name, location: location, offset: offset,
                                                        length: readLength, fileSize: file.count)
        }
        guard readLength == byteCount else {
            throw ONNXImportError.tensorDataSizeMismatch(tensor: name, expectedBytes: byteCount, actualBytes: readLength)
        }
        let t = Tensor(dtype: dtype, shape: shape)
        if byteCount > 0 {
            file.withUnsafeBytes { buffer in
                t.rawPointer.copyMemory(from: buffer.baseAddress! + offset, byteCount: byteCount)
            }
        }
        if dtype == .bool { Self.normaliseBools(t) }
        return t
    }

    /// The bytes of an external data file, mapped once per import.
    func externalFile(_ location: String, tensor: String) throws -> Data {
        guard !location.hasPrefix("/"), !location.hasPrefix("\\"), !location.dropFirst().hasPrefix(":") else {
            throw ONNXImportError.externalDataBadLocation(tensor: tensor, location: location, reason: "is absolute; it must be relative to the model's folder")
        }
        var parts: [Substring] = []
        for part in location.split(whereSeparator: { $0 == "/" || $0 == "\\" }) where part != "." {
            if part == ".." {
                guard !parts.isEmpty else {
                    throw ONNXImportError.externalDataBadLocation(tensor: tensor, location: location, reason: "leaves the model's folder")
                }
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        guard !parts.isEmpty else {
            throw ONNXImportError.externalDataBadLocation(tensor: tensor, location: location, reason: "names no file")
        }
        guard let baseDirectory else {
            throw ONNXImportError.externalDataInvalid(tensor: tensor, reason: "the model was loaded from memory without a base directory, so '\(location)' cannot be found")
        }
        let path = baseDirectory + "/" + parts.joined(separator: "/")
        if let cached = externalFiles[path] { return cached }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw ONNXImportError.externalDataFileMissing(tensor: tensor, location: location, path: path)
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw ONNXImportError.fileUnreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        externalFiles[path] = data
        return data
    }
}
