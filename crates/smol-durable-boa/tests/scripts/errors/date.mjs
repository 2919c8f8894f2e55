// expect: Date is not available in workflows: workflows must replay identically; pass times in args
export const meta = { name: "error", description: "Meets one error message" };
export default new Date().getFullYear();
