// dtc-example-tickets: a ticket-booking service as a dtc participant, written the way any
// service author would write one: against the public `DTCParticipant` library product only.
//
// State (keys → values, UTF-8 text):
//   event/<event>      the seats still free, in decimal ("98")
//   booking/<booking>  the booking record, JSON {"event":"concert","seats":2,"cancelled":false}
//
// Kinds of branch:
//   book    {"booking":"b1","event":"concert","seats":2}   takes seats from an event
//   cancel  {"booking":"b1","event":"concert"}             gives a booking's seats back
//
// Run it as one participant of a cluster config: dtc-example-tickets --config FILE --name NAME
import DTCParticipant
import Foundation

/// The events on sale when the participant first starts with an empty store.
let initialEvents: [(event: String, seats: Int)] = [
    ("concert", 100),
    ("play", 2),
    ("opera", 10),
]

struct BookPayload: Decodable {
    var booking: String
    var event: String
    var seats: Int
}

struct CancelPayload: Decodable {
    var booking: String
    var event: String
}

struct BookingRecord: Codable {
    var event: String
    var seats: Int
    var cancelled: Bool
}

struct TicketLogic: ParticipantLogic {
    static let maxIDBytes = 128

    func keys(for branch: Branch) throws -> [String] {
        switch branch.kind {
        case "book":
            let book: BookPayload = try decode(branch)
            return [eventKey(book.event), bookingKey(book.booking)]
        case "cancel":
            let cancel: CancelPayload = try decode(branch)
            return [eventKey(cancel.event), bookingKey(cancel.booking)]
        default:
            throw PlanRefusal("unknown kind '\(branch.kind)' (tickets runs book and cancel)")
        }
    }

    func plan(_ branch: Branch, committed: [String: [UInt8]]) throws -> [Write] {
        switch branch.kind {
        case "book": return try planBook(try decode(branch), committed: committed)
        case "cancel": return try planCancel(try decode(branch), committed: committed)
        default: throw PlanRefusal("unknown kind '\(branch.kind)' (tickets runs book and cancel)")
        }
    }

    private func planBook(_ book: BookPayload, committed: [String: [UInt8]]) throws -> [Write] {
        guard book.seats > 0 else { throw PlanRefusal("seats must be positive, got \(book.seats)") }
        guard let free = try freeSeats(book.event, committed) else { throw PlanRefusal("unknown event '\(book.event)'") }
        guard committed[bookingKey(book.booking)] == nil else {
            throw PlanRefusal("booking ID '\(book.booking)' is already used")
        }
        guard book.seats <= free else {
            throw PlanRefusal("not enough seats for '\(book.event)': \(book.seats) asked, \(free) left")
        }
        let record = BookingRecord(event: book.event, seats: book.seats, cancelled: false)
        return [
            Write(key: eventKey(book.event), value: Array(String(free - book.seats).utf8)),
            Write(key: bookingKey(book.booking), value: Array(try JSONEncoder().encode(record))),
        ]
    }

    private func planCancel(_ cancel: CancelPayload, committed: [String: [UInt8]]) throws -> [Write] {
        guard let free = try freeSeats(cancel.event, committed) else { throw PlanRefusal("unknown event '\(cancel.event)'") }
        guard let bytes = committed[bookingKey(cancel.booking)] else { throw PlanRefusal("no booking '\(cancel.booking)'") }
        var record = try JSONDecoder().decode(BookingRecord.self, from: Data(bytes))
        guard record.event == cancel.event else {
            throw PlanRefusal("booking '\(cancel.booking)' is for '\(record.event)', not '\(cancel.event)'")
        }
        guard !record.cancelled else { throw PlanRefusal("booking '\(cancel.booking)' is already cancelled") }
        record.cancelled = true
        // The record stays (marked cancelled), so its booking ID is never used twice.
        return [
            Write(key: eventKey(cancel.event), value: Array(String(free + record.seats).utf8)),
            Write(key: bookingKey(cancel.booking), value: Array(try JSONEncoder().encode(record))),
        ]
    }

    /// The event's free seats, or nil if there is no such event.
    private func freeSeats(_ event: String, _ committed: [String: [UInt8]]) throws -> Int? {
        guard let bytes = committed[eventKey(event)] else { return nil }
        guard let free = Int(String(decoding: bytes, as: UTF8.self)) else {
            throw PlanRefusal("event '\(event)' holds a corrupt seat count")
        }
        return free
    }

    private func eventKey(_ event: String) -> String { "event/\(event)" }
    private func bookingKey(_ booking: String) -> String { "booking/\(booking)" }

    /// Decodes a payload and checks its IDs; every problem is a readable NO reason.
    private func decode<T: Decodable>(_ branch: Branch) throws -> T {
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: Data(branch.payload))
        } catch {
            throw PlanRefusal("cannot decode the \(branch.kind) payload: \(Self.describe(error))")
        }
        let ids: [(String, String)] =
            switch value {
            case let book as BookPayload: [("booking", book.booking), ("event", book.event)]
            case let cancel as CancelPayload: [("booking", cancel.booking), ("event", cancel.event)]
            default: []
            }
        for (field, id) in ids {
            guard !id.isEmpty, id.utf8.count <= Self.maxIDBytes else {
                throw PlanRefusal("\(branch.kind) payload: '\(field)' must be 1...\(Self.maxIDBytes) bytes")
            }
        }
        return value
    }

    private static func describe(_ error: any Error) -> String {
        switch error as? DecodingError {
        case .keyNotFound(let key, _)?: "missing field '\(key.stringValue)'"
        case .typeMismatch(_, let context)?, .valueNotFound(_, let context)?:
            "wrong type for '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        case .dataCorrupted?: "not valid JSON"
        default: "\(error)"
        }
    }
}

// MARK: - Command line

func usageError(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message) (usage: dtc-example-tickets --config FILE --name NAME)\n".utf8))
    exit(2)
}

var configPath = "cluster.json"
var name: String?
var allowFaultInjection = false
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--config", "--name":
        guard let value = arguments.popFirst(), !value.hasPrefix("--") else { usageError("\(argument) needs a value") }
        if argument == "--config" { configPath = value } else { name = value }
    case "--allow-fault-injection":
        allowFaultInjection = true
    case "-h", "--help":
        print("usage: dtc-example-tickets --config FILE --name NAME\nServes the ticket-booking participant NAME of the cluster config FILE.")
        exit(0)
    default:
        usageError("unknown argument '\(argument)'")
    }
}
guard let name else { usageError("--name is required") }

let initialState = initialEvents.map { (key: "event/\($0.event)", value: Array(String($0.seats).utf8)) }
do {
    try await serveParticipant(
        TicketLogic(), name: name, configPath: configPath, initialState: initialState, allowFaultInjection: allowFaultInjection)
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
