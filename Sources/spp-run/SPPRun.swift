import ArgumentParser
import Foundation
import SPPCore
import SPPRuntime
import SPPTools


@main
struct SPPRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spp-run",
        abstract: "Run a .spp or .onnx model on .npy inputs and write each output as .npy.",
        version: ToolVersion.current)

    @Argument(help: "A .spp or .onnx model.") var model: String
    @OptionGroup var load: ModelLoadOptions
    @Option(name: .customLong("input"), help: "NAME=FILE.npy for each graph input (repeatable).") var inputs: [String] = []
    @Option(help: "Directory for the outputs, one <output name>.npy each.") var outputDir: String
    @Option(help: "Threads (0: one per core).") var threads: Int = 0

    func run() throws {
        let outputs: [String: Tensor] = CommandLineErrors.report {
            var named: [String: Tensor] = [:]
            for spec in inputs {
                guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex else {
                    throw ValidationError("--input takes NAME=FILE.npy, got '\(spec)'")
                }
                named[String(spec[..<eq])] = try Npy.read(path: String(spec[spec.index(after: eq)...]))
            }
            let m = try load.makeModel(ModelFile.open(model), threads: threads)
            let outputs = try m.run(named)
            if m.pruningMethod != nil || m.storedBytesRead > 0 {
                Report.stderr(String(format: "keep %.2f: %@ of stored tensor data read", load.keep, Report.bytes(m.storedBytesRead)))
            }
            return outputs
        }
        CommandLineErrors.report {
            try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
            // Everything is computed before the first file is written, and each write is atomic.
            for (name, tensor) in outputs.sorted(by: { $0.key < $1.key }) {
                let file = (outputDir as NSString).appendingPathComponent(OutputNames.fileName(for: name))
                try Npy.write(tensor, path: file)
                print("\(name): \(tensor.dtype) \(Tensor.describe(tensor.shape)) → \(file)")
            }
        }
    }
}
