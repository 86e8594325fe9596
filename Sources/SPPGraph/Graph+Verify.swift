extension Graph {
    /// Checks that the graph is well formed: every value read is defined
    /// earlier (nodes are in topological order), defined once, and every
    /// output is computed. Passes run it between stages in tests.
    /// `alsoDefined` names values provided from outside the graph (lookup tables read on demand).
    public func verify(alsoDefined: Set<String> = []) throws {
        var defined = Set(inputs.map(\.name)).union(initializers.keys).union(alsoDefined)
        for node in nodes {
            for input in node.inputs where !input.isEmpty && !defined.contains(input) {
                throw GraphError.undefinedValue(node: node.name, value: input)
            }
            for output in node.outputs where !output.isEmpty {
                if defined.contains(output) { throw GraphError.valueDefinedTwice(value: output, node: node.name) }
                defined.insert(output)
            }
        }
        for output in outputs where !defined.contains(output.name) {
            throw GraphError.missingOutput(value: output.name)
        }
    }
}
