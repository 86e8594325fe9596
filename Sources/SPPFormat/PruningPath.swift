/// The pruning path of a model (see `schemas/spp_model.proto` and
/// docs/format.md): every prunable unit, the pair it belongs to, and its global
/// rank. Any keep ratio is a prefix of the rank order.
public struct PruningPath: Sendable, Equatable {
    public var method: String
    public var pairs: [PrunablePair]
    /// Parameters of all prunable units (keep 1.0).
    public var prunableParameters: Int
    /// Parameters no keep level removes (embeddings, norms, biases outside pairs).
    public var fixedParameters: Int

    public init(method: String, pairs: [PrunablePair], prunableParameters: Int, fixedParameters: Int) {
        self.method = method
        self.pairs = pairs
        self.prunableParameters = prunableParameters
        self.fixedParameters = fixedParameters
    }
}

public struct PrunablePair: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case queryKey = "qk", valueOutput = "vo", feedForward = "ffn"
    }

    /// One weight of the pair, unit-major (row i belongs to the i-th stored unit),
    /// split into row chunks stored as separate tensors.
    public struct UnitTensor: Sendable, Equatable {
        public var role: String
        public var chunks: [String]
        public var chunkRows: [Int]
        public init(role: String, chunks: [String], chunkRows: [Int]) {
            self.role = role
            self.chunks = chunks
            self.chunkRows = chunkRows
        }
    }

    public var node: String
    public var kind: Kind
    /// Head of each unit, in storage order (attention pairs; empty for FFN).
    public var heads: [Int]
    /// Global rank of each unit, in storage order, ascending.
    public var ranks: [Int]
    public var parametersPerUnit: Int
    public var tensors: [UnitTensor]

    public init(node: String, kind: Kind, heads: [Int], ranks: [Int], parametersPerUnit: Int, tensors: [UnitTensor]) {
        self.node = node
        self.kind = kind
        self.heads = heads
        self.ranks = ranks
        self.parametersPerUnit = parametersPerUnit
        self.tensors = tensors
    }
}

/// Cost of the model at one keep level.
public struct CostLevel: Sendable, Equatable {
    public var keep: Float
    public var parameters: Int
    public var flops: Int
    public var weightBytes: Int
    public var referenceLength: Int

    public init(keep: Float, parameters: Int, flops: Int, weightBytes: Int, referenceLength: Int) {
        self.keep = keep
        self.parameters = parameters
        self.flops = flops
        self.weightBytes = weightBytes
        self.referenceLength = referenceLength
    }
}
