export const meta = { name: "budget-allowance-invalid", description: "A negative --budget-allowance fails before the run" };

export default await agent("never reached");
