import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses
import SPPRuntime

/// One committed fixture: an ONNX model, inputs, and onnxruntime's outputs
/// (made by tools/fixtures/*.py).
struct FixtureCase: CustomStringConvertible, Sendable {
    struct Spec: Decodable {
        var model: String?
        var inputs: [String]
        var outputs: [String]
        var atol: Double
        var rtol: Double
        var about: String?
    }

    let name: String
    let folder: URL

    var description: String { name }

    static var all: [FixtureCase] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: TestPaths.fixtures.path)) ?? []
        return names.sorted().compactMap { name in
            let folder = TestPaths.fixtures.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("case.json").path) else { return nil }
            return FixtureCase(name: name, folder: folder)
        }
    }

    func spec() throws -> Spec {
        try JSONDecoder().decode(Spec.self, from: Data(contentsOf: folder.appendingPathComponent("case.json")))
    }

    /// The model path; nil when it lives in ../shared and that is absent.
    func modelPath(_ spec: Spec) -> String? {
        guard let relative = spec.model else { return folder.appendingPathComponent("model.onnx").path }
        let url = TestPaths.packageRoot.appendingPathComponent(relative)
        return FileManager.default.fileExists(atPath: url.path) ? url.standardizedFileURL.path : nil
    }

    func inputs(_ spec: Spec) throws -> [String: Tensor] {
        var named: [String: Tensor] = [:]
        for (k, name) in spec.inputs.enumerated() {
            named[name] = try Npy.read(path: folder.appendingPathComponent("input_\(k).npy").path)
        }
        return named
    }

    func check(_ outputs: [String: Tensor], _ spec: Spec, via: String) throws {
        for (k, name) in spec.outputs.enumerated() {
            let expected = try Npy.read(path: folder.appendingPathComponent("output_\(k).npy").path)
            let actual = try #require(outputs[name], "\(self.name) (\(via)): output \(name) missing")
            let (ok, c) = Comparison.compare(actual, expected, atol: spec.atol, rtol: spec.rtol)
            #expect(ok, "\(self.name) (\(via)) output \(name): \(c)")
        }
    }
}

@Suite struct FixtureTests {
    /// Imported ONNX run directly, and the same model after the passes and a
    /// round trip through a .spp file: both must match onnxruntime.
    @Test(arguments: FixtureCase.all)
    func matchesOnnxRuntime(_ fixture: FixtureCase) throws {
        let spec = try fixture.spec()
        guard let path = fixture.modelPath(spec) else {
            print("skipping \(fixture.name): \(spec.model ?? "") not found (../shared absent)")
            return
        }
        let inputs = try fixture.inputs(spec)
        let imported = try ONNXImporter.load(path: path)
        try fixture.check(try Model(graph: imported.graph).run(inputs), spec, via: "onnx")

        var graph = imported.graph
        _ = try PassPipeline.run(&graph, verify: true)
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("model.spp").path
        try SPPWriter.write(SPPModel(graph: graph, provenance: Provenance()), to: file)
        try fixture.check(try Model(path: file).run(inputs), spec, via: "spp")
    }
}
