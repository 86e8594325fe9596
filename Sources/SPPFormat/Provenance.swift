import Foundation

/// Where a model came from and what was done to it, stored in every `.spp`
/// header so that a file can always be traced back to its source and command.
public struct Provenance: Sendable, Equatable {
    /// One pass that ran during conversion and how many rewrites it made.
    public struct PassRecord: Sendable, Equatable {
        public var name: String
        public var changes: Int

        public init(name: String, changes: Int) {
            self.name = name
            self.changes = changes
        }
    }

    /// Base name of the source file (e.g. `model.onnx`).
    public var sourceFile: String
    public var sourceSize: Int
    /// XXH64 (seed 0) of the whole source file; see `XXHash64.hashFile(at:)`.
    public var sourceHash: UInt64
    /// Who produced the source (ONNX `producer_name` and `producer_version`).
    public var sourceProducer: String
    public var toolName: String
    public var toolVersion: String
    /// Unix time in seconds.
    public var createdAt: Int
    /// The conversion command's options (stored sorted by key).
    public var options: [String: String]
    /// Passes in the order they ran.
    public var passes: [PassRecord]

    public init(sourceFile: String = "", sourceSize: Int = 0, sourceHash: UInt64 = 0, sourceProducer: String = "",
                toolName: String = "spp", toolVersion: String = "", createdAt: Int = Int(Date().timeIntervalSince1970),
                options: [String: String] = [:], passes: [PassRecord] = []) {
        self.sourceFile = sourceFile
        self.sourceSize = sourceSize
        self.sourceHash = sourceHash
        self.sourceProducer = sourceProducer
        self.toolName = toolName
        self.toolVersion = toolVersion
        self.createdAt = createdAt
        self.options = options
        self.passes = passes
    }
}
