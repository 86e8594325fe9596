import Foundation
import Testing
import SPPCore
import SPPONNX
import SPPRuntime

/// ONNX's own operator test cases (../shared/conformance/onnx-node), run through
/// the importer and the runtime. Each case ends as pass, unsupported (a typed
/// error saying what is not supported) or fail; no case may fail.
@Suite struct ConformanceTests {
    enum Outcome: Equatable { case pass, unsupported(String), fail(String) }

    static let root = TestPaths.shared.appendingPathComponent("conformance/onnx-node")

    static func run(_ folder: URL) -> Outcome {
        let fm = FileManager.default
        let model: ONNXModel
        do { model = try ONNXImporter.load(path: folder.appendingPathComponent("model.onnx").path) } catch let e as ONNXImportError {
            switch e {
            case .unsupportedOp, .unsupportedDataType, .unsupportedOpset, .unsupportedValueType, .unsupportedTensorEncoding, .unsupportedAttribute, .subgraphAttribute:
                return .unsupported(e.description)
            default: return .fail("import: \(e)")
            }
        } catch { return .fail("import: \(error)") }
        let program: Program
        do { program = try Program(graph: model.graph) } catch let e as RuntimeError {
            if case .unsupportedOp = e { return .unsupported(e.description) }
            return .fail("prepare: \(e)")
        } catch { return .fail("prepare: \(error)") }

        let sets = ((try? fm.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasPrefix("test_data_set_") }.sorted()
        for set in sets {
            let dir = folder.appendingPathComponent(set)
            var inputs: [String: Tensor] = [:]
            var expected: [Tensor] = []
            do {
                for (k, info) in model.graph.inputs.enumerated() {
                    let file = dir.appendingPathComponent("input_\(k).pb").path
                    if fm.fileExists(atPath: file) { inputs[info.name] = try ONNXImporter.readTensor(path: file) }
                }
                var k = 0
                while fm.fileExists(atPath: dir.appendingPathComponent("output_\(k).pb").path) {
                    expected.append(try ONNXImporter.readTensor(path: dir.appendingPathComponent("output_\(k).pb").path))
                    k += 1
                }
            } catch let e as ONNXImportError {
                if case .unsupportedDataType = e { return .unsupported(e.description) }
                if case .unsupportedTensorEncoding = e { return .unsupported(e.description) }
                return .fail("test data: \(e)")
            } catch { return .fail("test data: \(error)") }
            let outputs: [String: Tensor]
            do { outputs = try program.run(inputs) } catch let e as RuntimeError {
                if case .unsupportedDType = e { return .unsupported(e.description) }
                if case .unsupportedOp = e { return .unsupported(e.description) }
                return .fail("run: \(e)")
            } catch { return .fail("run: \(error)") }
            for (k, want) in expected.enumerated() {
                let name = model.graph.outputs[k].name
                guard let got = outputs[name] else { return .fail("output \(name) missing") }
                let (ok, c) = Comparison.compare(got, want, atol: 1e-7, rtol: 1e-3)
                if !ok { return .fail("\(set) output \(name): \(c)") }
            }
        }
        return .pass
    }

    @Test func everySupportedCasePasses() throws {
        guard TestPaths.hasShared else {
            print("skipping conformance: \(Self.root.path) not found (../shared absent)")
            return
        }
        let cases = try FileManager.default.contentsOfDirectory(atPath: Self.root.path).sorted()
        var passed = 0
        var unsupported: [(String, String)] = []
        var failed: [(String, String)] = []
        for name in cases {
            switch Self.run(Self.root.appendingPathComponent(name)) {
            case .pass: passed += 1
            case let .unsupported(why): unsupported.append((name, why))
            case let .fail(why): failed.append((name, why))
            }
        }
        print("conformance: \(passed) pass, \(unsupported.count) unsupported, \(failed.count) fail (of \(cases.count))")
        for (name, why) in unsupported { print("  unsupported \(name): \(why)") }
        for (name, why) in failed { print("  FAIL \(name): \(why)") }
        #expect(failed.isEmpty, "\(failed.count) conformance cases fail: \(failed.map(\.0).joined(separator: ", "))")
        // The transformer ops are covered: most cases must run, not just be declined.
        #expect(passed >= cases.count / 2)
    }
}
