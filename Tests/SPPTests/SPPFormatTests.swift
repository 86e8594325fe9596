import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import Testing

/// The `.spp` container: round trips, lazy reads, and a reader that survives
/// any truncated, corrupted or crafted file with a `FormatError`.
@Suite struct SPPFormatTests {
    // MARK: checksum

    @Test func xxhash64MatchesPublishedVectors() {
        // Prefixes of "0123456789:;<=>?@ABC..." (bytes 0x30, 0x31, ...), from public XXH64 test tables.
        let text = (0..<70).map { UInt8(0x30 + $0) }
        let vectors: [(Int, UInt64, UInt64)] = [   // (length, seed 0, seed 0x1234567890abcdef)
            (0, 0xef46db3751d8e999, 0xa2f5c44d0f46c872),
            (1, 0x633457081244afec, 0xf47ebf7f5cb6795b),
            (4, 0x4c33072b45647dcb, 0xe19fff0227e3b861),
            (9, 0x43ecc9248bc07d20, 0xc2fc855460180ba2),
            (31, 0xc506e23012915790, 0xa2c0eddf74983bfe),
            (32, 0x96ee2fa935fdd556, 0x1396bc2a00938b77),
            (33, 0xa5cdc6940c6fde9e, 0x65cd9ed37dff8753),
            (64, 0x3fe627fabdb30aea, 0xd2ff1b3750571f15),
            (65, 0xeddce6ec01f7e595, 0xb0aa81bc38df17b9),
        ]
        for (n, h0, hs) in vectors {
            let input = Array(text[0..<n])
            #expect(XXHash64.hash(input) == h0, "length \(n)")
            #expect(XXHash64.hash(input, seed: 0x1234_5678_90ab_cdef) == hs, "length \(n), seeded")
        }
        #expect(XXHash64.hash(Array("abc".utf8)) == 0x44bc2cf5ad770999)
    }

    @Test func xxhash64StreamingEqualsOneShot() {
        var rng = SplitMix64(seed: 7)
        let data = (0..<1000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for split in [0, 1, 7, 31, 32, 33, 100, 999, 1000] {
            for seed: UInt64 in [0, 42] {
                var h = XXHash64(seed: seed)
                h.update(Array(data[0..<split]))
                // Feed the rest in uneven pieces.
                var i = split
                var step = 1
                while i < data.count {
                    let j = min(data.count, i + step)
                    h.update(Array(data[i..<j]))
                    i = j
                    step = step * 3 % 41 + 1
                }
                #expect(h.finalize() == XXHash64.hash(data, seed: seed), "split \(split) seed \(seed)")
            }
        }
    }

    @Test func hashFileMatchesHashOfContents() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("source.bin")
        var rng = SplitMix64(seed: 3)
        let data = (0..<(9 << 20) + 13).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        try Data(data).write(to: url)
        let (size, hash) = try XXHash64.hashFile(at: url.path)
        #expect(size == data.count && hash == XXHash64.hash(data))
        #expect(throws: FormatError.self) { try XXHash64.hashFile(at: dir.appendingPathComponent("missing").path) }
    }

    // MARK: round trip

    @Test(arguments: [3, 0, 19, -5])
    func roundTripKeepsEverything(level: Int) throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        let model = sampleModel()
        try SPPWriter.write(model, to: path, compressionLevel: level)
        let reader = try SPPReader(path: path)
        #expect(reader.formatVersion == SPPFormat.currentVersion)
        // Frames zstd cannot shrink by 1/4 (random floats) are stored raw; a smooth ramp compresses.
        #expect(reader.tensorEntries.allSatisfy { level != 0 || $0.codec == .none })
        if level != 0 {
            #expect(reader.entry(named: "smooth")?.codec == .zstd && reader.entry(named: "w")?.codec == TensorEntryInfo.Codec.none)
        }
        #expect(reader.tensorEntries.allSatisfy { $0.fileOffset % SPPFormat.alignment == 0 })
        expectSameModel(try reader.loadModel(), model)
    }

    @Test func emptyModelRoundTrips() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("empty.spp").path
        let model = SPPModel(graph: Graph(inputs: [], outputs: [], initializers: [:], nodes: []), provenance: Provenance(createdAt: 0))
        try SPPWriter.write(model, to: path)
        expectSameModel(try SPPReader(path: path).loadModel(), model)
    }

    @Test func writingIsDeterministic() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.spp").path, b = dir.appendingPathComponent("b.spp").path
        let model = sampleModel()
        try SPPWriter.write(model, to: a)
        try SPPWriter.write(model, to: b)
        #expect(try Data(contentsOf: URL(fileURLWithPath: a)) == Data(contentsOf: URL(fileURLWithPath: b)))
    }

    // MARK: lazy reads

    @Test func readsOneTensorWithoutTheOthers() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        let model = sampleModel()
        try SPPWriter.write(model, to: path)

        // Corrupt every frame except that of "w": a lazy read of "w" must not notice.
        let probe = try SPPReader(path: path)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        for e in probe.tensorEntries where e.name != "w" && e.compressedSize > 0 {
            bytes[e.fileOffset] ^= 0xff
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let reader = try SPPReader(path: path)
        #expect(reader.graphStructure.initializers.isEmpty)
        #expect(reader.graphStructure.nodes.map(\.name) == model.graph.nodes.map(\.name))
        #expect(Set(reader.tensorEntries.map(\.name)) == Set(model.graph.initializers.keys))
        let info = try #require(reader.entry(named: "w"))
        #expect(info.dtype == .float32 && info.shape == [3, 5] && info.rawSize == 60)
        let w = try reader.tensor(named: "w")
        #expect(w.dtype == .float32 && w.shape == [3, 5])
        #expect(tensorBytes(w) == tensorBytes(model.graph.initializers["w"]!))

        #expect(throws: FormatError.noSuchTensor(path: path, name: "nope")) { try reader.tensor(named: "nope") }
        let ids = try #require(reader.entry(named: "ids"))
        #expect(throws: FormatError.self) { try reader.tensor(named: "ids") }
        do {
            _ = try reader.tensor(named: "ids")
        } catch let FormatError.tensorChecksumMismatch(_, tensor, stored, _) {
            #expect(tensor == "ids" && stored == ids.checksum)
        }
        #expect(throws: FormatError.self) { try reader.loadModel() }
    }

    // MARK: corruption

    @Test func everyTruncationIsAFormatError() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        try SPPWriter.write(sampleModel(), to: path)
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let cut = dir.appendingPathComponent("cut.spp")
        var lengths = Array(0..<min(200, full.count))
        lengths += Array(stride(from: 200, to: full.count, by: 7)) + [full.count - 1]
        for n in lengths {
            try Data(full[0..<n]).write(to: cut)
            do {
                _ = try SPPReader(path: cut.path).loadModel()
                Issue.record("a file cut to \(n) of \(full.count) bytes loaded")
            } catch is FormatError {
                // expected
            } catch {
                Issue.record("cut at \(n): not a FormatError: \(error)")
            }
        }
    }

    @Test func everyByteFlipIsDetectedOrHarmless() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        let model = sampleModel()
        try SPPWriter.write(model, to: path)
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let flipped = dir.appendingPathComponent("flipped.spp")
        var detected = 0, harmless = 0
        for i in 0..<full.count {
            var bytes = full
            bytes[i] ^= i % 2 == 0 ? 0x01 : 0x80
            try Data(bytes).write(to: flipped)
            do {
                let loaded = try SPPReader(path: flipped.path).loadModel()
                // Only padding is not covered by a checksum; what loads must be identical.
                expectSameModel(loaded, model, context: "byte \(i) flipped")
                harmless += 1
            } catch is FormatError {
                detected += 1
            } catch {
                Issue.record("flip at \(i): not a FormatError: \(error)")
            }
        }
        #expect(detected > full.count / 2)
        #expect(harmless > 0, "the padding should tolerate flips")
    }

    @Test func mutatedHeadersWithValidChecksumsNeverCrash() throws {
        // Past the checksum (as in a crafted file): random damage to the protobuf header
        // must give a FormatError or a model, never a trap.
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        try SPPWriter.write(sampleModel(), to: path)
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let headerLength = full[16..<24].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let mutated = dir.appendingPathComponent("mutated.spp")
        var rng = SplitMix64(seed: 11)
        var rejected = 0
        for round in 0..<1500 {
            var bytes = full
            for _ in 0...(round % 3) {
                let at = 24 + Int(rng.next() % UInt64(headerLength))
                bytes[at] = round % 2 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : bytes[at] ^ (1 << (rng.next() % 8))
            }
            let sum = XXHash64.hash(Array(bytes[0..<24 + headerLength]))
            withUnsafeBytes(of: sum.littleEndian) { bytes.replaceSubrange(24 + headerLength..<32 + headerLength, with: $0) }
            try Data(bytes).write(to: mutated)
            do {
                _ = try SPPReader(path: mutated.path).loadModel()
            } catch is FormatError {
                rejected += 1
            } catch {
                Issue.record("round \(round): not a FormatError: \(error)")
            }
        }
        #expect(rejected > 0)
    }

    @Test func notAnSPPFile() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("model.onnx")
        try Data("this is a text file, not a model".utf8).write(to: url)
        #expect(throws: FormatError.notSPPFile(path: url.path)) { try SPPReader(path: url.path) }
        try Data().write(to: url)
        #expect(throws: FormatError.truncated(path: url.path, section: "magic", offset: 0, expected: 8, available: 0)) {
            try SPPReader(path: url.path)
        }
        let missing = dir.appendingPathComponent("missing.spp").path
        #expect(throws: FormatError.self) { try SPPReader(path: missing) }
        #expect(throws: FormatError.self) { try SPPReader(path: dir.path) }
    }

    // MARK: crafted files (valid checksums, hostile contents)

    @Test func craftedFileFollowingTheSpecLoads() throws {
        // Written from docs/format.md with a hand-made protobuf encoder: checks the spec, not just the writer.
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("crafted.spp")
        let data: [UInt8] = [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]   // float32 [1, 2]
        var node = PB()
        node.string(1, "n")
        node.string(2, "Identity")
        node.string(3, "x")
        node.string(4, "y")
        var graph = PB()
        graph.message(1, node)
        var input = PB()
        input.string(1, "x")
        input.varint(2, 1)
        input.varint(3, 1)
        var dim = PB()
        dim.string(2, "batch")
        input.message(4, dim)
        graph.message(2, input)
        let header = modelHeader(graph: graph, tensors: [tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: XXHash64.hash(data))],
                                 dataSize: 8)
        try craft(url, header: header, data: data)
        let model = try SPPReader(path: url.path).loadModel()
        #expect(model.graph.nodes.first?.op == .identity)
        #expect(model.graph.inputs == [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch")])])
        #expect(model.graph.initializers["t"]?.floats == [1, 2])
    }

    @Test func craftedPreamblesAreRejected() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("crafted.spp")
        let p = url.path
        let header = modelHeader(tensors: [], dataSize: 0)

        try craft(url, version: 2, header: header, data: [])
        #expect(throws: FormatError.unsupportedVersion(path: p, found: 2, readable: SPPFormat.readableVersions)) { try SPPReader(path: p) }
        try craft(url, flags: 2, header: header, data: [])
        #expect(throws: FormatError.unsupportedFlags(path: p, flags: 2)) { try SPPReader(path: p) }
        try craft(url, header: header, data: [], headerLength: UInt64.max)
        #expect(throws: FormatError.limitExceeded(path: p, limit: "maxHeaderBytes", value: UInt64.max, maximum: FormatLimits().maxHeaderBytes)) {
            try SPPReader(path: p)
        }
        try craft(url, header: header, data: [], headerLength: 1000)
        #expect(throws: FormatError.self) { try SPPReader(path: p) }
        try craft(url, header: [0xff, 0xff, 0xff, 0xff], data: [])
        #expect(throws: FormatError.headerUndecodable(path: p, length: 4)) { try SPPReader(path: p) }
        try craft(url, header: modelHeader(version: 2, tensors: [], dataSize: 0), data: [])
        #expect(throws: FormatError.self) { try SPPReader(path: p) }
        try craft(url, header: header, data: [], corruptChecksum: true)
        #expect(throws: FormatError.self) { try SPPReader(path: p) }
        try craft(url, header: modelHeader(tensors: [], dataSize: 100), data: [])
        #expect(throws: FormatError.truncated(path: p, section: "data section", offset: 64, expected: 100, available: 0)) { try SPPReader(path: p) }
    }

    @Test func craftedTensorTablesAreRejected() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("crafted.spp")
        let p = url.path
        let data = [UInt8](repeating: 0, count: 8)
        let sum = XXHash64.hash(data)
        func check(_ entries: [PB], dataSize: UInt64 = 8, _ expected: FormatError, _ line: Int = #line) throws {
            try craft(url, header: modelHeader(tensors: entries, dataSize: dataSize), data: data)
            do {
                _ = try SPPReader(path: p).loadModel()
                Issue.record("loaded; expected \(expected)", sourceLocation: SourceLocation(fileID: #fileID, filePath: #filePath, line: line, column: 1))
            } catch let e as FormatError {
                #expect(e == expected, sourceLocation: SourceLocation(fileID: #fileID, filePath: #filePath, line: line, column: 1))
            }
        }
        try check([tensorEntry("t", dtype: 8, shape: [2], size: 8, raw: 8, checksum: sum)],
                  .unknownDType(path: p, tensor: "tensor 't'", code: 8))
        try check([tensorEntry("t", shape: [-1, 2], size: 8, raw: 8, checksum: sum)],
                  .absurdShape(path: p, tensor: "tensor 't'", shape: [-1, 2], reason: "negative dimension -1"))
        try check([tensorEntry("t", shape: [Int64.max / 2, 4], size: 8, raw: 8, checksum: sum)],
                  .absurdShape(path: p, tensor: "tensor 't'", shape: [Int64.max / 2, 4], reason: "the element count overflows"))
        try check([tensorEntry("t", shape: [1 << 40], size: 8, raw: 8, checksum: sum)],
                  .limitExceeded(path: p, limit: "maxElementsPerTensor", value: 1 << 40, maximum: FormatLimits().maxElementsPerTensor))
        try check([tensorEntry("t", shape: Array(repeating: 1, count: 17), size: 8, raw: 8, checksum: sum)],
                  .limitExceeded(path: p, limit: "maxRank", value: 17, maximum: 16))
        try check([tensorEntry("t", shape: [3], size: 8, raw: 8, checksum: sum)],
                  .absurdShape(path: p, tensor: "tensor 't'", shape: [3], reason: "its raw size is 8 bytes, the shape needs 12"))
        try check([tensorEntry("t", shape: [2], offset: 64, size: 8, raw: 8, checksum: sum)],
                  .frameOutOfBounds(path: p, tensor: "t", offset: 64, size: 8, dataSize: 8))
        try check([tensorEntry("t", shape: [2], offset: UInt64.max - 2, size: 8, raw: 8, checksum: sum)],
                  .frameOutOfBounds(path: p, tensor: "t", offset: UInt64.max - 2, size: 8, dataSize: 8))
        try check([tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: sum)], dataSize: 1 << 40,
                  .truncated(path: p, section: "data section", offset: 128, expected: 1 << 40, available: 8))
        // Offsets near Int.max: a data section that could not end in an Int is refused, and one that
        // just fits names its cut frame (its absolute end is Int.max, no overflow).
        try check([tensorEntry("t", shape: [2], offset: UInt64(Int.max) - 8, size: 8, raw: 8, checksum: sum)], dataSize: UInt64(Int.max),
                  .headerInconsistent(path: p, reason: "data section size \(Int.max) is absurd"))
        try check([tensorEntry("t", shape: [2], offset: UInt64(Int.max) - 136, size: 8, raw: 8, checksum: sum)], dataSize: UInt64(Int.max) - 128,
                  .truncated(path: p, section: "tensor 't'", offset: Int.max - 8, expected: 8, available: 0))
        try check([tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: sum, codec: 7)],
                  .unknownCodec(path: p, tensor: "t", code: 7))
        try check([tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: sum ^ 1)],
                  .tensorChecksumMismatch(path: p, tensor: "t", stored: sum ^ 1, computed: sum))
        try check([tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: sum, codec: 1)],
                  .decompressionFailed(path: p, tensor: "t", reason: "not a zstd frame"))
        try check([tensorEntry("t", shape: [1], size: 8, raw: 4, checksum: sum)],
                  .headerInconsistent(path: p, reason: "tensor 't' is stored uncompressed in 8 bytes but has 4"))
        try check([tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: sum),
                   tensorEntry("t", shape: [2], size: 8, raw: 8, checksum: sum)],
                  .headerInconsistent(path: p, reason: "two tensors are named 't'"))
    }

    @Test func craftedFramesAreRejected() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // Real zstd frames, taken from a file the writer made.
        let source = dir.appendingPathComponent("source.spp").path
        // Sixteen equal floats: zstd shrinks them, so the writer keeps the zstd frame.
        let sixteen = Tensor([Float](repeating: 1.5, count: 16), shape: [16])
        let graph = Graph(inputs: [], outputs: [], initializers: ["f": sixteen, "b": Tensor([true, false], shape: [2])], nodes: [])
        try SPPWriter.write(SPPModel(graph: graph, provenance: Provenance()), to: source)
        let reader = try SPPReader(path: source)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)))
        let f = try #require(reader.entry(named: "f"))
        #expect(f.codec == .zstd)
        let frame = Array(bytes[f.fileOffset..<f.fileOffset + f.compressedSize])
        let sum = XXHash64.hash(frame)
        let url = dir.appendingPathComponent("crafted.spp")
        let p = url.path

        // The frame holds 64 bytes; the table says the tensor has 5 floats.
        try craft(url, header: modelHeader(tensors: [tensorEntry("f", shape: [5], size: UInt64(frame.count), raw: 20,
                                                                 checksum: sum, codec: 1)], dataSize: UInt64(frame.count)), data: frame)
        #expect(throws: FormatError.decompressedSizeMismatch(path: p, tensor: "f", expected: 20, actual: 64)) {
            try SPPReader(path: p).loadModel()
        }
        // A frame cut short (with a checksum that matches the cut bytes).
        let short = Array(frame.dropLast(6))
        try craft(url, header: modelHeader(tensors: [tensorEntry("f", shape: [16], size: UInt64(short.count), raw: 64,
                                                                 checksum: XXHash64.hash(short), codec: 1)],
                                           dataSize: UInt64(short.count)), data: short)
        do {
            _ = try SPPReader(path: p).loadModel()
            Issue.record("a cut zstd frame decoded")
        } catch let FormatError.decompressionFailed(_, tensor, reason) {
            #expect(tensor == "f" && !reason.isEmpty)
        }
        // A bool tensor holding a 2.
        let bad: [UInt8] = [1, 2]
        try craft(url, header: modelHeader(tensors: [tensorEntry("b", dtype: 9, shape: [2], size: 2, raw: 2,
                                                                 checksum: XXHash64.hash(bad))], dataSize: 2), data: bad)
        #expect(throws: FormatError.invalidTensorData(path: p, tensor: "b", reason: "bool element 1 is neither 0 nor 1")) {
            try SPPReader(path: p).loadModel()
        }
    }

    @Test func craftedGraphsAreRejected() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("crafted.spp")
        let p = url.path
        func graph(_ build: (inout PB) -> Void) -> PB {
            var g = PB()
            build(&g)
            return g
        }
        func check(_ g: PB, _ expected: FormatError, _ line: Int = #line) throws {
            try craft(url, header: modelHeader(graph: g, tensors: [], dataSize: 0), data: [])
            let location = SourceLocation(fileID: #fileID, filePath: #filePath, line: line, column: 1)
            do {
                _ = try SPPReader(path: p)
                Issue.record("opened; expected \(expected)", sourceLocation: location)
            } catch let e as FormatError {
                #expect(e == expected, sourceLocation: location)
            }
        }
        func node(op: String, attribute: PB? = nil) -> PB {
            var n = PB()
            n.string(1, "n1")
            n.string(2, op)
            if let attribute { n.message(5, attribute) }
            return n
        }
        try check(graph { $0.message(1, node(op: "NoSuchOp")) }, .unknownOp(path: p, node: "n1", op: "NoSuchOp"))
        var kind = PB()
        kind.string(1, "k")
        kind.varint(2, 99)
        try check(graph { $0.message(1, node(op: "Relu", attribute: kind)) },
                  .badAttribute(path: p, node: "n1", attribute: "k", reason: "unknown attribute kind 99"))
        var noTensor = PB()
        noTensor.string(1, "value")
        noTensor.varint(2, 7)
        try check(graph { $0.message(1, node(op: "Constant", attribute: noTensor)) },
                  .badAttribute(path: p, node: "n1", attribute: "value", reason: "tensor attribute without a tensor"))
        var inline = PB()
        inline.varint(1, 1)
        inline.packed(2, [3])
        inline.bytes(3, [0, 0, 0, 0])
        var shortTensor = PB()
        shortTensor.string(1, "value")
        shortTensor.varint(2, 7)
        shortTensor.message(9, inline)
        try check(graph { $0.message(1, node(op: "Constant", attribute: shortTensor)) },
                  .absurdShape(path: p, tensor: "attribute 'value' of node 'n1'", shape: [3], reason: "it holds 4 bytes, the shape needs 12"))
        var negativeDim = PB()
        negativeDim.string(1, "x")
        negativeDim.varint(3, 1)
        var d = PB()
        d.varint(1, UInt64(bitPattern: -3))
        negativeDim.message(4, d)
        try check(graph { $0.message(2, negativeDim) },
                  .absurdShape(path: p, tensor: "graph input 'x'", shape: [-3], reason: "dimension 0 is negative"))
        var emptyDim = PB()
        emptyDim.string(1, "y")
        emptyDim.varint(3, 1)
        emptyDim.message(4, PB())
        try check(graph { $0.message(3, emptyDim) },
                  .headerInconsistent(path: p, reason: "graph output 'y': dimension 0 is neither fixed nor symbolic"))
        var badType = PB()
        badType.string(1, "x")
        badType.varint(2, 8)
        try check(graph { $0.message(2, badType) }, .unknownDType(path: p, tensor: "graph input 'x'", code: 8))
    }

    // MARK: limits

    @Test func tinyLimitsAreEnforced() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        try SPPWriter.write(sampleModel(), to: path)
        let cases: [(FormatLimits, String)] = [
            (FormatLimits(maxHeaderBytes: 16), "maxHeaderBytes"),
            (FormatLimits(maxTensors: 2), "maxTensors"),
            (FormatLimits(maxRank: 1), "maxRank"),
            (FormatLimits(maxElementsPerTensor: 10), "maxElementsPerTensor"),
            (FormatLimits(maxTotalBytes: 100), "maxTotalBytes"),
        ]
        for (limits, name) in cases {
            do {
                _ = try SPPReader(path: path, limits: limits)
                Issue.record("\(name): opened despite the limit")
            } catch let FormatError.limitExceeded(_, limit, _, _) {
                #expect(limit == name)
            }
        }
        _ = try SPPReader(path: path, limits: FormatLimits())
    }

    // MARK: atomic writes

    @Test func writingIntoAMissingDirectoryLeavesNothing() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("no/such/dir")
        let path = missing.appendingPathComponent("model.spp").path
        #expect(throws: FormatError.self) { try SPPWriter.write(sampleModel(), to: path) }
        #expect(!FileManager.default.fileExists(atPath: missing.path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func overwritingReplacesTheWholeFile() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        var big = sampleModel()
        big.graph.initializers["huge"] = Tensor((0..<100_000).map { Float($0).squareRoot() }, shape: [100_000])
        try SPPWriter.write(big, to: path)
        let bigSize = try fileSize(path)
        let small = SPPModel(graph: Graph(inputs: [], outputs: [], initializers: ["a": Tensor([1, 2, 3] as [Float], shape: [3])],
                                          nodes: []), provenance: Provenance(toolVersion: "2"))
        try SPPWriter.write(small, to: path)
        #expect(try fileSize(path) < bigSize)
        expectSameModel(try SPPReader(path: path).loadModel(), small)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.spp"])
    }

    @Test func aFailedWriteKeepsTheOldFile() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.spp").path
        try SPPWriter.write(sampleModel(), to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        var bad = sampleModel()
        bad.graph.inputs.append(ValueInfo(name: "neg", dtype: .float32, shape: [.fixed(-1)]))
        #expect(throws: FormatError.self) { try SPPWriter.write(bad, to: path) }
        #expect(throws: FormatError.self) { try SPPWriter.write(sampleModel(), to: path, compressionLevel: 99) }
        // The target is a directory: the rename fails after the data was written.
        let asDir = dir.appendingPathComponent("adir")
        try FileManager.default.createDirectory(at: asDir, withIntermediateDirectories: false)
        try Data("x".utf8).write(to: asDir.appendingPathComponent("keep"))
        #expect(throws: FormatError.self) { try SPPWriter.write(sampleModel(), to: asDir.path) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["adir", "model.spp"])
    }

    // MARK: storage precision

    @Test func encodedTensorsRoundTripAndSetTheFlag() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let half = Tensor(dtype: .float16, shape: [2])
        half.pointer(as: UInt16.self).update(from: [0x3c00, 0xc000], count: 2)
        func int8(_ v: [Int8], _ shape: [Int]) -> Tensor {
            let t = Tensor(dtype: .int8, shape: shape)
            t.pointer(as: Int8.self).update(from: v, count: v.count)
            return t
        }
        let initializers: [String: Tensor] = [
            "h": half, "plain16": half,
            "q": int8([1, -2, 3, -127, 0, 5], [3, 2]), "q/scales": Tensor([0.5, 1, 2], shape: [3, 1]),
            "c#0": int8([1, 2, 3], [1, 3]), "c#1": int8([4, 5, 6, 7, 8, 9], [2, 3]), "c/scales": Tensor([0.25, 0.5, 1], shape: [1, 3]),
        ]
        let encodings: [String: ValueEncoding] = ["h": .init(), "q": .init(scales: "q/scales"), "c#0": .init(scales: "c/scales"), "c#1": .init(scales: "c/scales")]
        let model = SPPModel(graph: Graph(inputs: [], outputs: [], initializers: initializers, nodes: []), provenance: Provenance(), encodings: encodings)
        let path = dir.appendingPathComponent("encoded.spp").path
        try SPPWriter.write(model, to: path)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(littleEndian32(bytes, at: 12) == SPPFormat.encodedTensorsFlag)
        let reader = try SPPReader(path: path)
        #expect(reader.entry(named: "q")?.encoding == ValueEncoding(valueDType: .float32, scales: "q/scales"))
        #expect(reader.entry(named: "h")?.valueDType == .float32 && reader.entry(named: "plain16")?.valueDType == .float16)
        #expect(reader.entry(named: "q/scales")?.encoding == nil)
        let loaded = try reader.loadModel()
        #expect(loaded.encodings == encodings)
        expectSameModel(loaded, model)
        // Without encoded tensors the flag stays 0, so older readers still read the file.
        try SPPWriter.write(sampleModel(), to: path)
        #expect(littleEndian32([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), at: 12) == 0)
    }

    @Test func writerRefusesInconsistentEncodings() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bad.spp").path
        let q = Tensor(dtype: .int8, shape: [2, 2], zeroed: true)
        func write(_ tensors: [String: Tensor], _ encodings: [String: ValueEncoding]) throws {
            try SPPWriter.write(SPPModel(graph: Graph(inputs: [], outputs: [], initializers: tensors, nodes: []), provenance: Provenance(),
                                         encodings: encodings), to: path)
        }
        #expect(throws: FormatError.writeFailed(path: path, reason: "tensor 'q': its scales 's' are not in the file")) {
            try write(["q": q], ["q": .init(scales: "s")])
        }
        #expect(throws: FormatError.writeFailed(path: path, reason: "tensor 'q' has scale -1.0; scales are finite and not negative")) {
            try write(["q": q, "s": Tensor([Float(1), -1], shape: [1, 2])], ["q": .init(scales: "s")])
        }
        #expect(throws: FormatError.writeFailed(path: path, reason: "tensor 'gone' has a storage precision but is not in the model")) {
            try write(["q": q], ["gone": .init()])
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func craftedEncodingsAreRejected() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("crafted.spp")
        let p = url.path
        // int8 "q" [2, 2] at 0, float32 "s" at 64.
        let q: [UInt8] = [1, 0xfe, 3, 4]
        func data(_ scales: [Float]) -> [UInt8] {
            q + [UInt8](repeating: 0, count: 60) + scales.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        }
        func qEntry(dtype: UInt64 = 3, shape: [Int64] = [2, 2], valueDType: UInt64? = 1, scales: String? = "s") -> PB {
            tensorEntry("q", dtype: dtype, shape: shape, size: 4, raw: 4, checksum: XXHash64.hash(q), valueDType: valueDType, scales: scales)
        }
        func sEntry(_ values: [Float] = [0.5, 2], dtype: UInt64 = 1, shape: [Int64] = [1, 2]) -> PB {
            let bytes = Array(data(values)[64...])
            return tensorEntry("s", dtype: dtype, shape: shape, offset: 64, size: UInt64(bytes.count), raw: UInt64(bytes.count), checksum: XXHash64.hash(bytes))
        }
        func check(_ entries: [PB], scales: [Float] = [0.5, 2], flags: UInt32 = 1, _ expected: FormatError, _ line: Int = #line) throws {
            let d = data(scales)
            try craft(url, flags: flags, header: modelHeader(tensors: entries, dataSize: UInt64(d.count)), data: d)
            do {
                _ = try SPPReader(path: p).loadModel()
                Issue.record("loaded; expected \(expected)", sourceLocation: SourceLocation(fileID: #fileID, filePath: #filePath, line: line, column: 1))
            } catch let e as FormatError {
                #expect(e == expected, sourceLocation: SourceLocation(fileID: #fileID, filePath: #filePath, line: line, column: 1))
            }
        }
        // As the format says, it loads: the stored int8 elements and the scales.
        let d = data([0.5, 2])
        try craft(url, flags: 1, header: modelHeader(tensors: [qEntry(), sEntry()], dataSize: UInt64(d.count)), data: d)
        let good = try SPPReader(path: p)
        #expect(good.entry(named: "q")?.encoding == ValueEncoding(scales: "s"))
        #expect(try good.tensor(named: "q").integers == [1, -2, 3, 4])

        try check([qEntry(), sEntry()], flags: 0,
                  .headerInconsistent(path: p, reason: "tensor 'q' is stored at a lower precision, but the preamble's flag for that is not set"))
        try check([qEntry(scales: nil), sEntry()], .invalidEncoding(path: p, tensor: "q", reason: "it is stored as int8 without scales"))
        try check([qEntry(scales: "nope"), sEntry()], .invalidEncoding(path: p, tensor: "q", reason: "its scales 'nope' are not in the file"))
        try check([qEntry(), sEntry(shape: [2])],
                  .invalidEncoding(path: p, tensor: "q", reason: "its scales 's' have shape [2], expected [2, 1] or [1, 2]"))
        try check([qEntry(), sEntry([0.5, 2, 1, 1], shape: [2, 2])], scales: [0.5, 2, 1, 1],
                  .invalidEncoding(path: p, tensor: "q", reason: "its scales 's' have shape [2, 2], expected [2, 1] or [1, 2]"))
        try check([qEntry(), sEntry([0.5, 2], dtype: 6)], .invalidEncoding(path: p, tensor: "q", reason: "its scales 's' are not stored as float32"))
        try check([qEntry(shape: [4]), sEntry()], .invalidEncoding(path: p, tensor: "q", reason: "int8 storage needs a matrix, the tensor has shape [4]"))
        try check([qEntry(valueDType: 8), sEntry()], .unknownDType(path: p, tensor: "the value of tensor 'q'", code: 8))
        try check([qEntry(valueDType: 7), sEntry()],
                  .invalidEncoding(path: p, tensor: "q", reason: "its value dtype is int64; stored precision stands only for float32 values"))
        try check([qEntry(dtype: 2), sEntry()],
                  .invalidEncoding(path: p, tensor: "q", reason: "it is stored as uint8; stored precision is float16, bfloat16 or int8"))
        try check([tensorEntry("h", dtype: 10, shape: [2], size: 4, raw: 4, checksum: XXHash64.hash(q), valueDType: 1, scales: "s"), sEntry()],
                  .invalidEncoding(path: p, tensor: "h", reason: "it is stored as float16, which takes no scales"))
        // The table is consistent; the scales' data is not.
        try check([qEntry(), sEntry([0.5, -2])], scales: [0.5, -2],
                  .invalidTensorData(path: p, tensor: "s", reason: "scale 1 is -2.0; scales are finite and not negative"))
        try check([qEntry(), sEntry([.nan, 2])], scales: [.nan, 2],
                  .invalidTensorData(path: p, tensor: "s", reason: "scale 0 is nan; scales are finite and not negative"))
    }

    @Test func errorsNameThePathAndTheProblem() {
        let e = FormatError.tensorChecksumMismatch(path: "m.spp", tensor: "enc.w", stored: 1, computed: 2)
        #expect(e.description.contains("m.spp") && e.description.contains("enc.w"))
        let t = FormatError.truncated(path: "m.spp", section: "tensor 'a'", offset: 4096, expected: 100, available: 3)
        #expect(t.description.contains("4096") && t.description.contains("tensor 'a'"))
    }
}

// MARK: - helpers

private func scratchDirectory() -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("spp-format-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

private func fileSize(_ path: String) throws -> Int {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? -1
}


private func littleEndian32(_ b: [UInt8], at o: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) }
}

private func tensorBytes(_ t: Tensor) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: t.rawPointer, count: t.byteCount))
}

/// A graph with several dtypes (including a scalar and an empty tensor), all
/// attribute kinds, symbolic and unknown shapes, and a full provenance.
private func sampleModel() -> SPPModel {
    var rng = SplitMix64(seed: 1)
    let half = Tensor(dtype: .float16, shape: [3])
    for (i, v) in [UInt16(0x3c00), 0xc000, 0x7bff].enumerated() { half.pointer(as: UInt16.self)[i] = v }
    let initializers: [String: Tensor] = [
        "w": Tensor((0..<15).map { _ in rng.signedUnit() }, shape: [3, 5]),
        "w2": Tensor((0..<20).map { _ in rng.signedUnit() }, shape: [5, 4]),
        "ids": Tensor([Int64.min, -1, 0, Int64.max], shape: [4]),
        "mask": Tensor([true, false, true, true, false, false], shape: [2, 3]),
        "count": Tensor([Int32(-42)], shape: []),
        "empty": Tensor([Float](), shape: [0, 7]),
        "half": half,
        "smooth": Tensor((0..<4096).map { Float($0 % 64) * 0.25 }, shape: [64, 64]),
    ]
    let attributes: [String: Attribute] = [
        "alpha": .float(0.5),
        "beta": .float(-.infinity),
        "transB": .int(1),
        "neg": .int(-7),
        "perm": .ints([0, 2, 1]),
        "noInts": .ints([]),
        "scales": .floats([1.5, -2, .greatestFiniteMagnitude]),
        "mode": .string("linear\u{0}x é"),
        "names": .strings(["a", "", "ü", "nul\u{0}inside"]),
        "value": .tensor(.init(Tensor([1, 2, 3] as [Int64], shape: [3]))),
        "scalar": .tensor(.init(Tensor([2.5] as [Float], shape: []))),
        "nothing": .tensor(.init(Tensor([Float](), shape: [2, 0]))),
    ]
    let nodes = [
        Node(name: "mm", op: .matMul, inputs: ["x", "w"], outputs: ["y"]),
        Node(name: "gemm", op: .gemm, inputs: ["y", "w2", ""], outputs: ["z"], attributes: attributes),
        Node(name: "", op: .identity, inputs: ["z"], outputs: ["out"]),
    ]
    let graph = Graph(
        inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(3)]),
                 ValueInfo(name: "unknown", dtype: nil, shape: nil),
                 ValueInfo(name: "scalar", dtype: .int64, shape: [])],
        outputs: [ValueInfo(name: "out", dtype: .float32, shape: [.symbol("batch"), .fixed(0), .fixed(4)])],
        initializers: initializers, nodes: nodes)
    let provenance = Provenance(sourceFile: "model.onnx", sourceSize: 90_123_456, sourceHash: 0xdead_beef_cafe_f00d,
                                sourceProducer: "pytorch 2.3.0", toolName: "spp", toolVersion: "0.1.0",
                                createdAt: 1_750_000_000, options: ["keep": "0.5", "calibration": "texts.txt", "empty": ""],
                                passes: [.init(name: "fold-constants", changes: 12), .init(name: "fuse-attention", changes: 0)])
    return SPPModel(graph: graph, provenance: provenance)
}

private func expectSameModel(_ a: SPPModel, _ b: SPPModel, context: String = "") {
    #expect(a.provenance == b.provenance, "\(context)")
    #expect(a.graph.inputs == b.graph.inputs, "\(context)")
    #expect(a.graph.outputs == b.graph.outputs, "\(context)")
    #expect(a.graph.nodes.count == b.graph.nodes.count, "\(context)")
    for (x, y) in zip(a.graph.nodes, b.graph.nodes) {
        #expect(x.name == y.name && x.op == y.op && x.inputs == y.inputs && x.outputs == y.outputs, "\(context)")
        #expect(Set(x.attributes.keys) == Set(y.attributes.keys), "\(context) node \(x.name)")
        for (key, va) in x.attributes {
            switch (va, y.attributes[key]) {
            case let (.tensor(ta), .tensor(tb)?):
                #expect(ta.tensor.dtype == tb.tensor.dtype && ta.tensor.shape == tb.tensor.shape
                    && tensorBytes(ta.tensor) == tensorBytes(tb.tensor), "\(context) attribute \(key)")
            default:
                #expect(va == y.attributes[key], "\(context) attribute \(key)")
            }
        }
    }
    #expect(Set(a.graph.initializers.keys) == Set(b.graph.initializers.keys), "\(context)")
    for (name, ta) in a.graph.initializers {
        guard let tb = b.graph.initializers[name] else { continue }
        #expect(ta.dtype == tb.dtype && ta.shape == tb.shape && tensorBytes(ta) == tensorBytes(tb), "\(context) tensor \(name)")
    }
}

// MARK: crafting files by hand (docs/format.md, schemas/spp_model.proto)

/// A minimal protobuf encoder, independent of the writer.
private struct PB {
    var bytes: [UInt8] = []

    mutating func raw(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ v: UInt64) {
        raw(UInt64(field << 3))
        raw(v)
    }

    mutating func fixed64(_ field: Int, _ v: UInt64) {
        raw(UInt64(field << 3 | 1))
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }

    mutating func bytes(_ field: Int, _ b: [UInt8]) {
        raw(UInt64(field << 3 | 2))
        raw(UInt64(b.count))
        bytes += b
    }

    mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ m: PB) { bytes(field, m.bytes) }

    mutating func packed(_ field: Int, _ values: [Int64]) {
        var inner = PB()
        for v in values { inner.raw(UInt64(bitPattern: v)) }
        bytes(field, inner.bytes)
    }
}

private func tensorEntry(_ name: String, dtype: UInt64 = 1, shape: [Int64], offset: UInt64 = 0, size: UInt64, raw: UInt64,
                         checksum: UInt64, codec: UInt64 = 0, valueDType: UInt64? = nil, scales: String? = nil) -> PB {
    var e = PB()
    e.string(1, name)
    e.varint(2, dtype)
    e.packed(3, shape)
    e.varint(4, offset)
    e.varint(5, size)
    e.varint(6, raw)
    e.fixed64(7, checksum)
    e.varint(8, codec)
    if let valueDType { e.varint(9, valueDType) }
    if let scales { e.string(10, scales) }
    return e
}

private func modelHeader(version: UInt64 = 1, graph: PB? = nil, tensors: [PB], dataSize: UInt64) -> [UInt8] {
    var m = PB()
    m.varint(1, version)
    if let graph { m.message(2, graph) }
    for t in tensors { m.message(3, t) }
    m.varint(4, dataSize)
    var provenance = PB()
    provenance.string(5, "hand")
    m.message(5, provenance)
    return m.bytes
}

/// Magic, version, flags, header length, header, XXH64 of all that, zero padding to 64, data.
private func craft(_ url: URL, version: UInt32 = 1, flags: UInt32 = 0, header: [UInt8], data: [UInt8],
                   headerLength: UInt64? = nil, corruptChecksum: Bool = false) throws {
    var f = Array("SPPMODEL".utf8)
    withUnsafeBytes(of: version.littleEndian) { f += $0 }
    withUnsafeBytes(of: flags.littleEndian) { f += $0 }
    withUnsafeBytes(of: (headerLength ?? UInt64(header.count)).littleEndian) { f += $0 }
    f += header
    let sum = XXHash64.hash(f) ^ (corruptChecksum ? 1 : 0)
    withUnsafeBytes(of: sum.littleEndian) { f += $0 }
    f += [UInt8](repeating: 0, count: (64 - f.count % 64) % 64)
    f += data
    try Data(f).write(to: url)
}
