import Foundation
import Testing
import SPPCore

/// The command-line tools as a user runs them: exit status, the `error:` line,
/// and no output left behind when something is wrong.
@Suite struct CLITests {
    struct Result { var status: Int32; var stdout: String; var stderr: String }

    /// The built tools sit beside the test bundle.
    static let binDir: URL = {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("spp-run").path) { return url }
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }()

    static func run(_ tool: String, _ args: [String]) throws -> Result {
        let p = Process()
        p.executableURL = binDir.appendingPathComponent(tool)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
    var modelPath: String { fixture.appendingPathComponent("model.onnx").path }

    func inputArgs(_ names: [String] = ["input_ids", "attention_mask", "token_type_ids"]) -> [String] {
        names.enumerated().flatMap { ["--input", "\($0.element)=\(fixture.appendingPathComponent("input_\($0.offset).npy").path)"] }
    }

    func files(in dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }

    @Test func convertThenRunMatchesReference() throws {
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        let convert = try Self.run("spp", ["convert", modelPath, "-o", spp])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stdout.contains("parameters"))
        let out = dir.appendingPathComponent("out")
        let run = try Self.run("spp-run", [spp] + inputArgs() + ["--output-dir", out.path])
        #expect(run.status == 0, "\(run.stderr)")
        let got = try Npy.read(path: out.appendingPathComponent("last_hidden_state.npy").path)
        let want = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        let (ok, c) = Comparison.compare(got, want, atol: 1e-4, rtol: 1e-4)
        #expect(ok, "\(c)")
        let inspect = try Self.run("spp", ["inspect", spp])
        #expect(inspect.status == 0 && inspect.stdout.contains("input_ids: int64 [batch, sequence]") || inspect.stdout.contains("input_ids: int64"))
    }

    @Test func convertStoresWeightsInInt8AndRunsThem() throws {
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m8.spp").path
        let convert = try Self.run("spp", ["convert", modelPath, "-o", spp, "--weights", "int8"])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stdout.contains("storage: int8 "), "\(convert.stdout)")
        let inspect = try Self.run("spp", ["inspect", spp])
        #expect(inspect.stdout.contains("int8 (× scales) for float32"), "\(inspect.stdout)")
        // Runs in int8 unless told otherwise; float32 on request, close to the reference.
        let want = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        for weights in [[], ["--weights", "fp32"]] {
            let out = dir.appendingPathComponent("out\(weights.count)")
            let run = try Self.run("spp-run", [spp] + inputArgs() + ["--output-dir", out.path] + weights)
            #expect(run.status == 0, "\(run.stderr)")
            let got = try Npy.read(path: out.appendingPathComponent("last_hidden_state.npy").path)
            // Measured ~0.02 with int8 weights and activations.
            #expect(normalisedError(got, want) < 0.06, "\(weights)")
        }
        // An int8 file is not written again at another precision: a named error, no output.
        let again = dir.appendingPathComponent("again.spp").path
        let r = try Self.run("spp", ["convert", spp, "-o", again, "--weights", "fp16"])
        #expect(r.status == 1 && r.stderr.contains("m8.spp already stores tensors below float32"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: again))
    }

    @Test func truncatedOnnxFailsCleanly() throws {
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: modelPath))
        let bad = dir.appendingPathComponent("bad.onnx")
        try bytes.prefix(bytes.count / 2).write(to: bad)
        let r = try Self.run("spp", ["convert", bad.path, "-o", dir.appendingPathComponent("out.spp").path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("error:") && r.stderr.contains("bad.onnx"), "\(r.stderr)")
        #expect(files(in: dir) == ["bad.onnx"], "output left behind: \(files(in: dir))")
    }

    @Test func corruptOrTruncatedSppFailsCleanly() throws {
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp")
        #expect(try Self.run("spp", ["convert", modelPath, "-o", spp.path]).status == 0)
        var bytes = try Data(contentsOf: spp)
        let truncated = dir.appendingPathComponent("truncated.spp")
        try bytes.prefix(bytes.count - 100).write(to: truncated)
        bytes[bytes.count / 2] ^= 0xff  // inside the largest frame (word embeddings)
        let corrupt = dir.appendingPathComponent("corrupt.spp")
        try bytes.write(to: corrupt)
        for file in [truncated, corrupt] {
            let out = dir.appendingPathComponent("out-\(file.lastPathComponent)")
            let r = try Self.run("spp-run", [file.path] + inputArgs() + ["--output-dir", out.path])
            #expect(r.status == 1, "\(file.lastPathComponent): status \(r.status)")
            #expect(r.stderr.hasPrefix("error:"), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out.path))
        }
    }

    @Test func wrongInputsAreNamed() throws {
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out")
        // A misspelt input name.
        var r = try Self.run("spp-run", [modelPath] + inputArgs(["input_ids", "attention_mask", "token_types"]) + ["--output-dir", out.path])
        #expect(r.status == 1 && r.stderr.contains("'token_types'"), "\(r.stderr)")
        // A float tensor where int64 ids are expected.
        let floats = dir.appendingPathComponent("floats.npy").path
        try Npy.write(Tensor([Float](repeating: 1, count: 14), shape: [2, 7]), path: floats)
        r = try Self.run("spp-run", [modelPath, "--input", "input_ids=\(floats)"] + inputArgs().suffix(4) + ["--output-dir", out.path])
        #expect(r.status == 1 && r.stderr.contains("input_ids") && r.stderr.contains("float32"), "\(r.stderr)")
        // Wrong rank.
        let flat = dir.appendingPathComponent("flat.npy").path
        try Npy.write(Tensor([Int64](repeating: 1, count: 7), shape: [7]), path: flat)
        r = try Self.run("spp-run", [modelPath, "--input", "input_ids=\(flat)"] + inputArgs().suffix(4) + ["--output-dir", out.path])
        #expect(r.status == 1 && r.stderr.contains("rank"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    @Test func unsupportedOpIsNamed() throws {
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = TestPaths.fixtures.appendingPathComponent("onnx_importer/unsupported_op.onnx").path
        let r = try Self.run("spp", ["convert", model, "-o", dir.appendingPathComponent("x.spp").path])
        #expect(r.status == 1 && r.stderr.contains("error:") && r.stderr.contains("opset"), "\(r.stderr)")
        #expect(files(in: dir).isEmpty)
    }
}
