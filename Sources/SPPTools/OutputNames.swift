/// File names for graph outputs: the output name, with path separators replaced.
public enum OutputNames {
    public static func fileName(for output: String) -> String {
        output.replacingOccurrences(of: "/", with: "_") + ".npy"
    }
}
