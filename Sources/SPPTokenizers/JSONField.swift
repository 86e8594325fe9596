/// A possibly absent JSON value and its dotted path, with typed accessors
/// that report the path on error. Null counts as absent.
struct JSONField {
    let value: JSONValue?
    let path: String

    init(_ value: JSONValue?, path: String) {
        self.value = value
        self.path = path
    }

    var isPresent: Bool { value.map { !$0.isNull } ?? false }

    subscript(key: String) -> JSONField {
        JSONField(value?[key], path: path.isEmpty ? key : path + "." + key)
    }

    subscript(index: Int) -> JSONField {
        let element = value?.array.flatMap { index < $0.count ? $0[index] : nil }
        return JSONField(element, path: "\(path)[\(index)]")
    }

    func required() throws -> JSONValue {
        guard let value, !value.isNull else { throw TokenizerError.missingField(path: path) }
        return value
    }

    private func wrongType(_ expected: String, _ found: JSONValue) -> TokenizerError {
        .invalidField(path: path, reason: "expected \(expected), found \(found.kind)")
    }

    func string() throws -> String {
        let v = try required()
        guard let s = v.string else { throw wrongType("a string", v) }
        return s
    }

    func int() throws -> Int {
        let v = try required()
        guard let i = v.int else { throw wrongType("an integer", v) }
        return i
    }

    func array() throws -> [JSONValue] {
        let v = try required()
        guard let a = v.array else { throw wrongType("an array", v) }
        return a
    }

    func object() throws -> [(key: String, value: JSONValue)] {
        let v = try required()
        guard let m = v.members else { throw wrongType("an object", v) }
        return m
    }

    func optionalString() throws -> String? { isPresent ? try string() : nil }
    func optionalInt() throws -> Int? { isPresent ? try int() : nil }

    func optionalBool() throws -> Bool? {
        guard isPresent, let v = value else { return nil }
        guard let b = v.bool else { throw wrongType("a boolean", v) }
        return b
    }
}
