import DTCCore
import Testing

@testable import DTCShop

/// The shop's business rules as a participant's logic: payloads in, locks and writes out.
@Suite struct ShopLogicTests {
    let inventory = ShopLogic(service: .inventory)
    let orders = ShopLogic(service: .orders)
    let accounts = ShopLogic(service: .accounts)
    let appleStock: [String: StateValue] = ["stock/apple": .count(10)]

    private func plan(_ logic: ShopLogic, _ op: ShopOperation, _ committed: [String: StateValue]) -> Result<[Write], PlanRefusal> {
        logic.planned(op.branch(rm: logic.service.rawValue), committed: committed.mapValues { $0.encoded() })
    }

    private func refusal(_ plan: Result<[Write], PlanRefusal>) -> String? {
        if case .failure(let refusal) = plan { return refusal.reason }
        return nil
    }

    @Test func aReservationTakesStockAndRecordsItself() {
        #expect(plan(inventory, .reserve(orderID: "o1", sku: "apple", qty: 3), appleStock) == .success([
            Write(key: "stock/apple", value: StateValue.count(7).encoded()),
            Write(key: "resv/o1", value: StateValue.reservation(sku: "apple", qty: 3).encoded()),
        ]))
    }

    @Test func aDebitTakesMoneyAndRecordsItself() {
        #expect(plan(accounts, .debit(orderID: "o1", userID: "ada", amount: 300), ["bal/ada": .count(1_000)]) == .success([
            Write(key: "bal/ada", value: StateValue.count(700).encoded()),
            Write(key: "debit/o1", value: StateValue.debit(userID: "ada", amount: 300).encoded()),
        ]))
    }

    @Test func aCreditAddsMoneyOnceAndRecordsItself() throws {
        let credit = ShopOperation.credit(transferID: "x1", userID: "bob", amount: 250)
        #expect(plan(accounts, credit, ["bal/bob": .count(1_000)]) == .success([
            Write(key: "bal/bob", value: StateValue.count(1_250).encoded()),
            Write(key: "credit/x1", value: StateValue.credit(userID: "bob", amount: 250).encoded()),
        ]))
        #expect(refusal(plan(accounts, credit, ["bal/bob": .count(1_000), "credit/x1": .credit(userID: "bob", amount: 250)]))
            == "transfer x1 was already credited")
        #expect(refusal(plan(accounts, credit, [:])) == "unknown user bob")
        #expect(refusal(plan(inventory, credit, [:])) == "credit is not an operation of the inventory service")
        #expect(try accounts.keys(for: credit.branch(rm: "accounts")) == ["bal/bob", "credit/x1"])
    }

    @Test func anOrderIsCreatedOnce() {
        let op = ShopOperation.createOrder(orderID: "o1", userID: "ada", sku: "apple", qty: 2, amount: 300)
        #expect(plan(orders, op, [:]) == .success([Write(key: "order/o1", value: StateValue.order(userID: "ada", sku: "apple", qty: 2, amount: 300).encoded())]))
        let existing: [String: StateValue] = ["order/o1": .order(userID: "bob", sku: "pear", qty: 1, amount: 1)]
        #expect(refusal(plan(orders, op, existing))?.contains("already exists") == true)
    }

    @Test func reservationsAreRefusedWithAReason() {
        let reserve = ShopOperation.reserve(orderID: "o1", sku: "apple", qty: 11)
        #expect(refusal(plan(inventory, reserve, appleStock))?.contains("insufficient stock") == true)
        #expect(refusal(plan(inventory, reserve, [:]))?.contains("unknown sku apple") == true)
        let reserved = appleStock.merging(["resv/o1": .reservation(sku: "apple", qty: 1)]) { $1 }
        #expect(refusal(plan(inventory, .reserve(orderID: "o1", sku: "apple", qty: 1), reserved))?.contains("already has a reservation") == true)
        // Exactly the stock on hand is enough.
        #expect(refusal(plan(inventory, .reserve(orderID: "o1", sku: "apple", qty: 10), appleStock)) == nil)
    }

    @Test func debitsAreRefusedWithAReason() {
        let debit = ShopOperation.debit(orderID: "o1", userID: "ada", amount: 500)
        #expect(refusal(plan(accounts, debit, ["bal/ada": .count(499)]))?.contains("insufficient balance") == true)
        #expect(refusal(plan(accounts, debit, [:]))?.contains("unknown user ada") == true)
        let debited: [String: StateValue] = ["bal/ada": .count(1_000), "debit/o1": .debit(userID: "ada", amount: 1)]
        #expect(refusal(plan(accounts, debit, debited))?.contains("already debited") == true)
    }

    @Test func theLockedKeysAreTheKeysThePlanReadsAndWrites() throws {
        let committed: [String: [UInt8]] = ["stock/apple": StateValue.count(10).encoded(), "bal/ada": StateValue.count(1_000).encoded()]
        let branches = orderBranches(orderID: "o1", user: "ada", sku: "apple", qty: 2, amount: 300, inventory: "inventory", orders: "orders", accounts: "accounts")
        for (logic, branch) in zip([inventory, orders, accounts], branches) {
            let keys = Set(try logic.keys(for: branch))
            let writes = try logic.planned(branch, committed: committed).get()
            #expect(!writes.isEmpty)
            #expect(Set(writes.map(\.key)).isSubset(of: keys), "\(branch.kind) writes outside its locks")
        }
    }

    // MARK: - Payloads

    @Test func payloadsRoundTripAsFlatJSON() throws {
        let op = ShopOperation.createOrder(orderID: "o-\"1\"\\", userID: "ädä", sku: "sku\n7", qty: 2, amount: 1_000_000_000_000)
        let branch = op.branch(rm: "orders")
        #expect(branch.kind == "create-order")
        #expect(try ShopOperation(branch: branch) == op)
        let text = #"{"order_id":"o1","sku":"sku-1","qty":2}"#
        #expect(String(decoding: ShopOperation.reserve(orderID: "o1", sku: "sku-1", qty: 2).payload, as: UTF8.self) == text)
        let spaced = Branch(rm: "inventory", kind: "reserve", payload: Array(#" { "qty" : 2 , "sku":"sku-1", "order_id":"o1" } "#.utf8))
        #expect(try ShopOperation(branch: spaced) == .reserve(orderID: "o1", sku: "sku-1", qty: 2))
    }

    @Test func aPayloadTheShopCannotReadIsRefusedWithTheReason() {
        let cases: [(String, String, String)] = [
            ("reserve", "not json", "cannot decode the reserve payload"),
            ("reserve", #"{"order_id":"o1","sku":"s"}"#, "field 'qty' is missing"),
            ("reserve", #"{"order_id":"o1","sku":"s","qty":0}"#, "field 'qty' must be in 1..."),
            ("reserve", #"{"order_id":"o1","sku":"s","qty":1,"x":1}"#, "unknown field 'x'"),
            ("reserve", #"{"order_id":"o1","sku":"s","qty":1}  x"#, "unexpected bytes after the object"),
            ("reserve", #"{"order_id":"o1","order_id":"o2","sku":"s","qty":1}"#, "appears twice"),
            ("debit", #"{"order_id":"o1","user_id":"u","amount":"5"}"#, "field 'amount' is missing or not an integer"),
            ("refund", #"{}"#, "unknown kind 'refund'"),
        ]
        for (kind, payload, expected) in cases {
            let branch = Branch(rm: "x", kind: kind, payload: Array(payload.utf8))
            #expect(refusal(inventory.lockKeys(for: branch).map { _ in [] })?.contains(expected) == true || refusal(accounts.lockKeys(for: branch).map { _ in [] })?.contains(expected) == true, "\(payload)")
        }
    }

    @Test func aServiceRefusesAnotherServicesKind() {
        let debit = ShopOperation.debit(orderID: "o1", userID: "ada", amount: 1).branch(rm: "inventory")
        #expect(refusal(inventory.lockKeys(for: debit).map { _ in [] })?.contains("not an operation of the inventory service") == true)
    }
}
