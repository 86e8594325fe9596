import Foundation
import SPPCore
import SPPGraph

/// Calibration inputs given as tensors: a folder with one subfolder per input
/// set, each holding `<input name>.npy` for every graph input (a set is one batch).
public enum NpyInputSets {
    public static func read(_ folder: String, graphInputs: [ValueInfo]) throws -> [[String: Tensor]] {
        let fm = FileManager.default
        let sets = try fm.contentsOfDirectory(atPath: folder).sorted().filter { name in
            var dir: ObjCBool = false
            return fm.fileExists(atPath: (folder as NSString).appendingPathComponent(name), isDirectory: &dir) && dir.boolValue
        }
        guard !sets.isEmpty else { throw ConversionError.badInputSets(folder, "no subfolders (one per input set, each with <input name>.npy)") }
        return try sets.map { set in
            let dir = (folder as NSString).appendingPathComponent(set)
            var inputs: [String: Tensor] = [:]
            for info in graphInputs {
                let file = (dir as NSString).appendingPathComponent(info.name + ".npy")
                guard fm.fileExists(atPath: file) else {
                    throw ConversionError.badInputSets(folder, "input set '\(set)' lacks \(info.name).npy")
                }
                inputs[info.name] = try Npy.read(path: file)
            }
            return inputs
        }
    }
}
